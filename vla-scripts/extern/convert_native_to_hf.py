"""Convert a native training-run directory (or one checkpoints/*.pt) into the Hugging Face layout.

    python vla-scripts/extern/convert_native_to_hf.py --run_dir runs/my-vla --out_dir hf/my-vla

The result loads with `AutoModelForImageTextToText.from_pretrained(out_dir)` after `import prismatic`
(no trust_remote_code), and with `prismatic.load_vla(out_dir)`. `--tokenizer` points at the LLM's
tokenizer files when the run directory has no `tokenizer/` folder (runs of the original codebase).
"""


from dataclasses import dataclass
from pathlib import Path

import draccus

from prismatic.models.load import load_vla
from prismatic.util.cli import check_output_dir


@dataclass
class ConvertConfig:
    run_dir: Path  # native run directory, or a checkpoints/*.pt file inside one
    out_dir: Path  # HF-layout directory to create
    tokenizer: Path | None = None  # tokenizer directory (default: <run_dir>/tokenizer)
    max_shard_size: str = "5GB"  # shard size of model-XXXXX-of-XXXXX.safetensors


@draccus.wrap()
def main(cfg: ConvertConfig) -> None:
    run_dir = cfg.run_dir.parents[1] if cfg.run_dir.suffix == ".pt" else cfg.run_dir
    check_output_dir(cfg.out_dir, run_dir=run_dir, tokenizer=cfg.tokenizer)
    vla = load_vla(cfg.run_dir, tokenizer=cfg.tokenizer)
    out = vla.save_pretrained(cfg.out_dir, max_shard_size=cfg.max_shard_size)
    print(f"wrote Hugging Face-layout checkpoint {out} ({vla})")


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
