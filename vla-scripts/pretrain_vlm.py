"""Train a Prismatic VLM, stage by stage: align (projector), finetune (projector + LLM), full-finetune (+ ViT),
lora-finetune (projector + LoRA on the LLM). Same loop, FSDP, checkpoints and resume as vla-scripts/train.py.

    # LLaVA-1.5 reproduction (CLIP 336px + Vicuna 7B), 8 GPUs: align, then finetune from the align run
    torchrun --standalone --nproc-per-node 8 vla-scripts/pretrain_vlm.py --model.type reproduction-llava-v15+7b \
        --stage align --data.root data --llm_weights /ckpts/vicuna-7b-v1.5 --vision_weights /ckpts/timm
    torchrun --standalone --nproc-per-node 8 vla-scripts/pretrain_vlm.py --model.type reproduction-llava-v15+7b \
        --stage finetune --data.root data --llm_weights /ckpts/vicuna-7b-v1.5 --vision_weights /ckpts/timm
    # OpenVLA's base VLM (no align stage: the projector trains from scratch with the LLM), 2 epochs
    torchrun --standalone --nproc-per-node 8 vla-scripts/pretrain_vlm.py --model.type prism-dinosiglip-224px+7b \
        --stage finetune --data.root data --llm_weights /ckpts/Llama-2-7b-hf --vision_weights /ckpts/timm
    # tiny VLM on CPU (tests, toy jobs): your own conversation JSON and images
    python vla-scripts/pretrain_vlm.py --model.type tiny --stage align --data.json caps.json --data.image_dir imgs \
        --run_id toy-align --model.align.max_steps 200
    python vla-scripts/pretrain_vlm.py --model.type tiny --stage finetune --pretrained_checkpoint runs/toy-align \
        --data.json qa.json --data.image_dir imgs --run_id toy-ft --model.finetune.max_steps 400

A finetune run is a base for VLA training as it is: `vla-scripts/train.py --vla.base_vlm runs/<run_id>`.
Run the same command again to resume. Data layout and every flag: docs/vlm.md.
"""

import draccus

from prismatic.vlm.config import VLMTrainConfig


@draccus.wrap()
def main(cfg: VLMTrainConfig) -> None:
    from prismatic.vlm.training import train_vlm

    train_vlm(cfg)


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
