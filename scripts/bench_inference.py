"""Benchmark `predict_action` against a plain transformers `generate` loop over the same model.

The baseline is the original's way of running OpenVLA: `model.generate(..., max_new_tokens=7)` and
decoding the last 7 tokens. Both are timed in the same process, on the same weights and inputs,
and must produce the same action tokens (checked). Results go to a JSON file with the machine,
library versions and the command line.

    # tiny reference checkpoint on CPU (what CI-class machines can run)
    .venv/bin/python scripts/bench_inference.py --model tiny --device cpu --out bench_results/inference_cpu_tiny.json
    # full 7B architecture with random weights on a GPU
    .venv/bin/python scripts/bench_inference.py --model 7b --device cuda --dtype bfloat16 --out bench_results/inference_h100_7b.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing

import prismatic  # noqa: E402
from prismatic.models.configuration import OpenVLAConfig  # noqa: E402
from prismatic.models.load import build_processor, build_random_on_device  # noqa: E402
from prismatic.models.vla import VLA  # noqa: E402

TINY = REPO / "tests" / "assets" / "openvla-tiny"


def build(model: str, device: str, dtype: torch.dtype) -> VLA:
    if model == "tiny":
        return prismatic.load_vla(TINY / "checkpoint", device=device, dtype=dtype)
    if model != "7b":
        return prismatic.load_vla(model, device=device, dtype=dtype)  # a local checkpoint directory
    # Full-size openvla-7b architecture, random weights, built straight on the target device.
    stats = json.loads((TINY / "checkpoint" / "config.json").read_text())["norm_stats"]
    config = OpenVLAConfig(norm_stats=stats)
    m = build_random_on_device(config, device, dtype)
    from transformers import AutoTokenizer

    return VLA(m.eval(), build_processor(config, AutoTokenizer.from_pretrained(TINY / "checkpoint")))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, warmup: int, iters: int) -> list[float]:
    return timed_interleaved([fn], device, warmup, iters)[0]


def timed_interleaved(fns: list, device: str, warmup: int, iters: int) -> list[list[float]]:
    """Time several functions in alternation, so load from other processes hits all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for fn, times in zip(fns, out):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
    return out


def summary(seconds: list[float], batch: int) -> dict:
    med = statistics.median(seconds)
    return {
        "median_ms": med * 1e3,
        "p90_ms": float(np.percentile(seconds, 90)) * 1e3,
        "actions_per_s": batch / med,
        "iters": len(seconds),
    }


def machine_info(device: str) -> dict:
    import timm
    import transformers

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": __import__("os").cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "prismatic": prismatic.__version__,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (reference checkpoint), '7b' (random weights) or a path")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--batch-sizes", default="1,4", help="comma-separated batch sizes for predict_action")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "inference.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dtype = getattr(torch, args.dtype)
    vla = build(args.model, args.device, dtype)
    model, processor = vla.model, vla.processor
    images = [Image.open(p) for p in sorted((TINY / "cases").glob("*.png"))]
    instruction, key = "put the carrot on the plate", "bridge_orig"
    inputs = processor(vla.prompt(instruction), images[0]).to(args.device)
    ids_with_empty = torch.cat([inputs["input_ids"], torch.tensor([[29871]], device=args.device)], dim=1)

    def ours() -> np.ndarray:
        return model.predict_action(**inputs, unnorm_key=key)

    def baseline() -> np.ndarray:  # the original's predict_action: HF generate, then decode
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids_with_empty, pixel_values=inputs["pixel_values"].to(dtype), max_new_tokens=7, do_sample=False
            )
        return model.decode_actions(out[0, -7:].cpu().numpy(), key)

    same = bool(np.array_equal(ours(), baseline()))
    t_base, t_ours = timed_interleaved([baseline, ours], args.device, args.warmup, args.iters)
    results = {
        "baseline_hf_generate_b1": summary(t_base, 1),
        "predict_action_b1": summary(t_ours, 1),
        "speedup_b1": statistics.median(t_base) / statistics.median(t_ours),
        "same_actions_as_baseline": same,
    }
    for b in [int(x) for x in args.batch_sizes.split(",") if int(x) > 1]:
        batch = processor([vla.prompt(instruction)] * b, [images[i % len(images)] for i in range(b)]).to(args.device)
        t = timed(lambda batch=batch: model.predict_action(**batch, unnorm_key=key), args.device, args.warmup, args.iters)
        results[f"predict_action_b{b}"] = summary(t, b)
    if args.device.startswith("cuda"):
        results["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30

    report = {
        "benchmark": "inference",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "machine": machine_info(args.device),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    b1 = results["predict_action_b1"]
    print(json.dumps(report, indent=2))
    print(
        f"\npredict_action: {b1['median_ms']:.1f} ms ({b1['actions_per_s']:.1f} actions/s) vs HF generate "
        f"{results['baseline_hf_generate_b1']['median_ms']:.1f} ms -> {results['speedup_b1']:.2f}x; "
        f"identical actions: {same}; written to {args.out}"
    )


if __name__ == "__main__":
    main()
