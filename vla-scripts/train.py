"""Train a VLA: pretraining on OXE mixtures, or full fine-tuning, with FSDP on any number of GPUs.

    # openvla-7b recipe (Magic Soup++), 8 nodes x 8 GPUs; accumulation is derived from the world size. The base
    # VLM as prismatic-vlms releases it; its ViTs' timm weights from --vla.vision_weights (else the HF cache)
    torchrun --nnodes 8 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $HEAD:29500 vla-scripts/train.py \
        --vla.type prism-dinosiglip-224px+mx-oxe-magic-soup-plus --vla.base_vlm /ckpts/prism-dinosiglip-224px-7b \
        --vla.vision_weights /ckpts/timm --data_root /data/oxe --run_root runs
    # Bridge on one 8-GPU node
    torchrun --standalone --nproc-per-node 8 vla-scripts/train.py --vla.type prism-dinosiglip-224px+mx-bridge \
        --vla.base_vlm /ckpts/prism-dinosiglip-224px-7b --data_root /data/oxe
    # tiny CPU run (tests, smoke): 2 processes, gloo
    torchrun --standalone --nproc-per-node 2 vla-scripts/train.py --config_path configs/vla/tiny.yaml --data_root DIR

A run resumes from its latest complete checkpoint when started again with the same --run_id.
"""

import draccus

from prismatic.training.config import TrainConfig
from prismatic.training.trainer import run


@draccus.wrap()
def main(cfg: TrainConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
