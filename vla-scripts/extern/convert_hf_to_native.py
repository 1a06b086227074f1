"""Convert a Hugging Face-layout OpenVLA directory into a native training-run directory.

    python vla-scripts/extern/convert_hf_to_native.py --hf_dir /ckpts/openvla-7b --out_dir runs/openvla-7b-native

Writes config.json (architecture), dataset_statistics.json, checkpoints/latest-checkpoint.pt and the
tokenizer. Tensors are renamed, never modified: converting back gives bit-identical weights.
"""


from dataclasses import dataclass
from pathlib import Path

import draccus

from prismatic.models.load import load_vla
from prismatic.util.cli import check_output_dir


@dataclass
class ConvertConfig:
    hf_dir: Path  # HF-layout checkpoint directory (config.json, *.safetensors, tokenizer, preprocessor)
    out_dir: Path  # native run directory to create


@draccus.wrap()
def main(cfg: ConvertConfig) -> None:
    check_output_dir(cfg.out_dir, hf_dir=cfg.hf_dir)
    vla = load_vla(cfg.hf_dir)
    out = vla.save_native(cfg.out_dir)
    print(f"wrote native run directory {out} ({vla})")


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
