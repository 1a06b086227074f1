"""Merge a LoRA run's adapter into its base checkpoint and write an HF-layout directory.

    python vla-scripts/merge_lora.py --base_dir /ckpts/openvla-7b --run_dir runs/<run_id> --out_dir hf/merged

The result loads with `AutoModelForImageTextToText.from_pretrained` (after `import prismatic`) and
carries the run's dataset statistics, so `predict_action(..., unnorm_key=<your dataset>)` works.
The base is read in full precision also for QLoRA runs (`--lora.quantization`): the adapter is merged
into the original weights, not into a de-quantised copy.
"""

from dataclasses import dataclass
from pathlib import Path

import draccus

from prismatic.training.lora import merge_adapter, run_head_settings
from prismatic.util.cli import check_output_dir


@dataclass
class MergeConfig:
    base_dir: Path  # the HF-layout checkpoint that was fine-tuned
    run_dir: Path  # the fine-tuning run (holds adapter/ and dataset_statistics.json)
    out_dir: Path  # where to write the merged HF-layout checkpoint


@draccus.wrap()
def main(cfg: MergeConfig) -> None:
    check_output_dir(cfg.out_dir, base_dir=cfg.base_dir, run_dir=cfg.run_dir)  # before anything is read or written
    adapter = cfg.run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} has no adapter_config.json: is {cfg.run_dir} a LoRA run that saved a checkpoint?")
    vla = merge_adapter(cfg.base_dir, adapter, cfg.out_dir, cfg.run_dir / "dataset_statistics.json",
                        head_settings=run_head_settings(cfg.run_dir))
    print(f"merged {adapter} into {cfg.base_dir} -> {cfg.out_dir} ({vla})")


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
