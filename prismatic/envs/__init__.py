"""Embedded simulation environments for closed-loop evaluation (no simulator dependency beyond gymnasium).

`TabletopEnv` is a language-conditioned reaching task rendered in pure numpy, small enough for a tiny
VLA to learn on CPU in minutes; `prismatic.envs.expert` has its scripted expert and data helpers.
"""

from prismatic.envs.expert import (
    Policy,
    RandomPolicy,
    ScriptedExpert,
    SwappedInstructionEnv,
    collect_episodes,
    rollout,
    swap_instruction,
)
from prismatic.envs.tabletop import (
    ACTION_HIGH,
    ACTION_LOW,
    COLORS,
    MAX_DELTA,
    SHAPES,
    TEMPLATES,
    Scene,
    TableObject,
    TabletopEnv,
)

__all__ = [
    "ACTION_HIGH",
    "ACTION_LOW",
    "COLORS",
    "MAX_DELTA",
    "SHAPES",
    "TEMPLATES",
    "Policy",
    "RandomPolicy",
    "Scene",
    "ScriptedExpert",
    "SwappedInstructionEnv",
    "TableObject",
    "TabletopEnv",
    "collect_episodes",
    "rollout",
    "swap_instruction",
]
