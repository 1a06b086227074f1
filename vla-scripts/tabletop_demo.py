"""The main job: the whole VLA chain on a laptop CPU, on the embedded tabletop benchmark.

    .venv/bin/python vla-scripts/tabletop_demo.py                          # 11-15 minutes on 2 CPU cores
    .venv/bin/python vla-scripts/tabletop_demo.py --head l1-regression     # OpenVLA-OFT's head: chunks in one pass
    .venv/bin/python vla-scripts/tabletop_demo.py --compare bins,l1-regression  # both on the same data, side by side

1. generate scripted-expert demonstrations in `prismatic.envs.TabletopEnv`, each chaining every object of
   its scene as successive goals, and record them as an RLDS dataset (TFDS format, per-step
   instructions), registered by one YAML entry (configs/datasets/tabletop_reach.yaml);
2. train the registry's `tiny` VLA (SigLIP-style ViT, MLP projector, Llama decoder; random init; the
   benchmark's word tokenizer) with the project's own training entry point (vla-scripts/train.py,
   configs/vla/tabletop_demo.yaml), with the action head of --head (prismatic.models.heads);
3. evaluate it in closed loop on held-out seeds with the evaluation harness: the policy, the same
   policy with each instruction swapped to another object's (language-blind control), and a random
   policy; print the success table and the policy's actions per second; write results JSON, the
   training curves PNG and rollout videos.

Every step is skipped when its output already exists for the same settings (re-running resumes): the data
when its generation settings match, the policy when its seed, resolution, recipe, head and data match (else it
is trained afresh; --max_steps extends it), each evaluation when it belongs to the same weights, seeds and
chunk execution (else it is run again). `--fresh true` starts over. The library is `prismatic.envs.demo`.
"""

import os

import draccus

from prismatic.envs.demo import DemoConfig, run

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the demo


@draccus.wrap()
def main(cfg: DemoConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
