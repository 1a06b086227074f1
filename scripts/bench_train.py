"""Benchmark training steps: our train step vs the original's way, in the same process on the same batch.

Ours computes the LM head only at the labelled positions (`return_label_logits=True`); the baseline
runs the full-sequence logits and transformers' loss (what the original does). Both are timed
interleaved on the same model and batch; reported: steps/s, samples/s, peak memory and the ratios.

    # tiny model on CPU
    .venv/bin/python scripts/bench_train.py --model tiny --device cpu --batch 16 --out bench_results/train_cpu_tiny.json
    # 7B architecture (random weights), LoRA r=32, batch 16, on a GPU
    .venv/bin/python scripts/bench_train.py --model 7b --lora-rank 32 --batch 16 --device cuda --out bench_results/train_gpu_7b_lora.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import prismatic  # noqa: E402
from prismatic.constants import IGNORE_INDEX  # noqa: E402
from prismatic.training.config import LoRAConfig, TrainConfig, VLAConfig  # noqa: E402
from prismatic.training.model_setup import build_model_and_processor  # noqa: E402


def build(model: str, device: str, lora_rank: int | None):
    if model == "tiny":
        v = VLAConfig(size="tiny", image_size=224)
        m = build_model_and_processor(TrainConfig(vla=v, data_root=Path("."))).model
    else:  # full-size openvla-7b architecture, random weights, straight on the device
        from prismatic.models.configuration import OpenVLAConfig
        from prismatic.models.load import build_random_on_device

        m = build_random_on_device(OpenVLAConfig(norm_stats={}), device)
    if lora_rank:
        from prismatic.training.lora import wrap_with_lora

        m = wrap_with_lora(m, LoRAConfig(enabled=True, rank=lora_rank, alpha=min(lora_rank, 16)))
    if model == "7b":
        m.gradient_checkpointing_enable()  # as training does at this size
    return m.to(device).train()


def batch(b: int, device: str, dtype: torch.dtype, image: int = 224, text: int = 24):
    ids = torch.randint(3, 31000, (b, text), device=device)
    ids[:, 0] = 1
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -8:] = ids[:, -8:]  # 7 action tokens + EOS, as in VLA training
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "pixel_values": torch.randn(b, 6, image, image, device=device, dtype=dtype)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=["tiny", "7b"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lora-rank", type=int, default=None)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "train.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dtype = torch.bfloat16 if args.model == "7b" else torch.float32
    model = build(args.model, args.device, args.lora_rank)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    data = batch(args.batch, args.device, dtype)

    def step(label_only: bool) -> None:
        out = model(**data, return_label_logits=label_only)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    results = {}
    for name, label_only in (("baseline_full_logits", False), ("ours_label_logits", True)):
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.warmup):
            step(label_only)
        times = []
        for _ in range(args.iters):
            sync()
            t = time.perf_counter()
            step(label_only)
            sync()
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        results[name] = {"median_step_s": med, "steps_per_s": 1 / med, "samples_per_s": args.batch / med}
        if args.device == "cuda":
            results[name]["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    results["speedup"] = results["baseline_full_logits"]["median_step_s"] / results["ours_label_logits"]["median_step_s"]
    results["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    import transformers

    report = {
        "benchmark": "train_step",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": args.model, "device": args.device, "batch": args.batch, "lora_rank": args.lora_rank,
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
        "machine": {"platform": platform.platform(), "cpu_count": __import__("os").cpu_count(),
                    "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "prismatic": prismatic.__version__},
        "results": results,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
