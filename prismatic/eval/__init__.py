"""Closed-loop evaluation: one harness (`run_evaluation`) for every environment, policies, statistics, reports.

LIBERO support lives in `prismatic.eval.libero` (optional extra `prismatic[libero]`) and is imported only
when asked for, e.g. through `make_env_factory("libero", suite=...)`.
"""

from prismatic.eval.env import (
    ENV_FACTORIES,
    EnvFactory,
    EvalEnv,
    EvalTask,
    GymEnvAdapter,
    GymEnvFactory,
    Step,
)
from prismatic.eval.harness import (
    EpisodeRecord,
    EvalResults,
    ResumeError,
    make_env_factory,
    run_episode,
    run_evaluation,
)
from prismatic.eval.policy import (
    Policy,
    RandomPolicy,
    RemotePolicy,
    RemotePolicyError,
    VLAPolicy,
)
from prismatic.eval.report import format_table, plot_success_bars
from prismatic.eval.stats import SuccessStats, wilson_interval
from prismatic.eval.video import save_video

__all__ = [
    "ENV_FACTORIES",
    "EnvFactory",
    "EpisodeRecord",
    "EvalEnv",
    "EvalResults",
    "EvalTask",
    "GymEnvAdapter",
    "GymEnvFactory",
    "Policy",
    "RandomPolicy",
    "RemotePolicy",
    "RemotePolicyError",
    "ResumeError",
    "Step",
    "SuccessStats",
    "VLAPolicy",
    "format_table",
    "make_env_factory",
    "plot_success_bars",
    "run_episode",
    "run_evaluation",
    "save_video",
    "wilson_interval",
]
