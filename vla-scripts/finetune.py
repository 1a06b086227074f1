"""LoRA fine-tuning of an HF-layout checkpoint on one's own RLDS dataset: the same loop as train.py.

    # one GPU: openvla-7b + LoRA r=32 on a LIBERO suite (the original's recipe: batch 16, lr 5e-4)
    torchrun --standalone --nproc-per-node 1 vla-scripts/finetune.py --vla.base_vlm /ckpts/openvla-7b \
        --vla.type prism-dinosiglip-224px+mx-libero-spatial --data_root /data/modified_libero_rlds
    # your own dataset, registered by one YAML entry
    torchrun --standalone --nproc-per-node 1 vla-scripts/finetune.py --vla.base_vlm /ckpts/openvla-7b \
        --vla.data_mix my_robot --dataset_configs '[configs/datasets/my_robot.yaml]' --data_root /data/rlds
    # QLoRA: the same on a frozen 4-bit (NF4) base (or --lora.quantization 8bit); several GPUs need
    # --parallel.sharding no_shard (each holds the quantised base, DDP all-reduces the adapters' gradients)
    torchrun --standalone --nproc-per-node 1 vla-scripts/finetune.py --vla.base_vlm /ckpts/openvla-7b \
        --vla.type prism-dinosiglip-224px+mx-libero-spatial --data_root /data/modified_libero_rlds --lora.quantization 4bit
    # afterwards: merge the adapter into a standalone checkpoint
    python vla-scripts/merge_lora.py --base_dir /ckpts/openvla-7b --run_dir runs/<run_id> --out_dir hf/merged

Adapters (`<run_dir>/adapter/`) and dataset statistics are saved every --checkpoint.save_interval steps
together with the resumable state (adapters + optimizer; the frozen base is read again from
--vla.base_vlm on resume). Adapters trained on a quantised base merge into the full-precision base.
"""

import draccus

from prismatic.training.config import TrainConfig
from prismatic.training.trainer import run


@draccus.wrap()
def main(cfg: TrainConfig) -> None:
    cfg.lora.enabled = True
    run(cfg)


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
