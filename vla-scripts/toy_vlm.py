"""The toy VLM job: a tiny VLM learns tabletop captions and questions, then becomes the tabletop VLA's base.

    .venv/bin/python vla-scripts/toy_vlm.py                  # VLM ~17 min, then two demo VLA runs compared (~50 min in all on 2 cores)
    .venv/bin/python vla-scripts/toy_vlm.py --compare false  # the VLM alone: data, align, finetune, held-out accuracy

1. captions and question/answer pairs about rendered tabletop scenes, as LLaVA-v1.5 JSON;
2-3. the tabletop demo's tiny model trained as a VLM with vla-scripts/pretrain_vlm.py: align (projector), then
   full-finetune (ViT, projector and LLM: the tiny ViT starts random);
4. exact-match accuracy per question type on held-out scenes, next to image-blind baselines;
5-6. the tabletop demo's VLA recipe from scratch and from the VLM (--vla.base_vlm), same seed and data, each
   checkpoint every --eval_every steps evaluated in closed loop: steps to the demo's bar for both starts.

Every stage is skipped when its output exists for the same inputs (re-running resumes); `--fresh true` starts over.
Results: <out_dir>/results.json, results.md (tables), results.png (success against steps). Library:
prismatic/envs/toy_vlm.py; the numbers measured with the defaults are in docs/tabletop.md.
"""

import os

import draccus

from prismatic.envs.toy_vlm import ToyVLMConfig, run

os.environ.setdefault(
    "TF_CPP_MIN_LOG_LEVEL", "2"
)  # keep TensorFlow's start-up chatter out of the job's output


@draccus.wrap()
def main(cfg: ToyVLMConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
