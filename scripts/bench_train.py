"""Benchmark training steps: our train step vs the original's way, in the same process on the same batch.

Ours computes the LM head only at the labelled positions (`return_label_logits=True`); the baseline
runs the full-sequence logits and transformers' loss (what the original does). Both are timed
interleaved on the same model and batch; reported: steps/s, samples/s, peak memory and the ratios.

    # tiny model on CPU
    .venv/bin/python scripts/bench_train.py --model tiny --device cpu --batch 16 --out bench_results/train_cpu_tiny.json
    # 7B architecture (random weights), LoRA r=32, batch 16, on a GPU
    .venv/bin/python scripts/bench_train.py --model 7b --lora-rank 32 --batch 16 --device cuda --out bench_results/train_gpu_7b_lora.json
    # QLoRA: the base loaded 4-bit (or 8-bit) as finetune.py does; tiny/small are written once as a
    # random-weight checkpoint to load from, a real model comes from --base-vlm
    .venv/bin/python scripts/bench_train.py --model small --lora-rank 32 --lora-quant 4bit --device cpu --out bench_results/train_cpu_small_qlora4.json
    .venv/bin/python scripts/bench_train.py --base-vlm /ckpts/openvla-7b --lora-rank 32 --lora-quant 4bit --device cuda

Every report has `weights_mib`: the model's tensor bytes by kind (quantised layers with their scales,
other base weights, adapters).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import prismatic  # noqa: E402
from prismatic.constants import IGNORE_INDEX  # noqa: E402
from prismatic.training.config import LoRAConfig, TrainConfig, VLAConfig  # noqa: E402
from prismatic.training.model_setup import build_model_and_processor  # noqa: E402


def build(model: str, device: str, lora_rank: int | None, lora_quant: str | None, base_vlm: Path | None):
    lora = None
    if lora_rank:
        lora = LoRAConfig(enabled=True, rank=lora_rank, alpha=min(lora_rank, 16), quantization=lora_quant)
    if base_vlm is not None or lora_quant:  # the training path (quantised onto the device with --lora-quant)
        with tempfile.TemporaryDirectory(prefix="bench-base-") as tmp:
            if base_vlm is None:  # tiny / small: random weights, written as a checkpoint to load from
                base_vlm = Path(tmp)
                random_init = TrainConfig(vla=VLAConfig(size=model, image_size=224), data_root=Path("."))
                build_model_and_processor(random_init).save_pretrained(base_vlm)
            v = VLAConfig(base_vlm=base_vlm, size="full")
            cfg = TrainConfig(vla=v, data_root=Path("."), lora=lora or LoRAConfig())
            m = build_model_and_processor(cfg, device).model
    elif model in ("tiny", "small"):
        v = VLAConfig(size=model, image_size=224)
        m = build_model_and_processor(TrainConfig(vla=v, data_root=Path("."))).model
    else:  # full-size openvla-7b architecture, random weights, straight on the device
        from prismatic.models.configuration import OpenVLAConfig
        from prismatic.models.load import build_random_on_device

        m = build_random_on_device(OpenVLAConfig(norm_stats={}), device)
    if lora is not None:
        from prismatic.training.lora import wrap_with_lora

        m = wrap_with_lora(m, lora)
    if model == "7b":
        m.gradient_checkpointing_enable()  # as training does at this size
    return m.to(device).train()


def weights_mib(model: torch.nn.Module) -> dict[str, float]:
    """Tensor bytes held by the model, by kind: the Linear layers QLoRA quantises (all but the projector and
    the LM head; packed weights + scales when quantised), the other base tensors, the LoRA adapters."""
    from prismatic.training.lora import SKIP_MODULES

    linears = [n + "." for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".lora_" not in n + "." and not set(SKIP_MODULES) & set(n.split("."))]  # fmt: skip
    out = {"quantizable_linears": 0.0, "other_base": 0.0, "adapters": 0.0}
    for key, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            continue
        kind = "other_base"
        if ".lora_" in key:
            kind = "adapters"
        elif any(key.startswith(n) for n in linears):
            kind = "quantizable_linears"
        out[kind] += t.numel() * t.element_size() / 2**20
    out["total"] = sum(out.values())
    out = {k: round(v, 3) for k, v in out.items()}
    out["quantizable_linear_params_m"] = round(sum(
        m.in_features * m.out_features for n, m in model.named_modules() if n + "." in linears) / 1e6, 4)  # fmt: skip
    return out


def batch(b: int, device: str, dtype: torch.dtype, image: int = 224, text: int = 24):
    ids = torch.randint(3, 31000, (b, text), device=device)
    ids[:, 0] = 1
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -8:] = ids[:, -8:]  # 7 action tokens + EOS, as in VLA training
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "pixel_values": torch.randn(b, 6, image, image, device=device, dtype=dtype)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=["tiny", "small", "7b"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lora-rank", type=int, default=None)
    ap.add_argument("--lora-quant", choices=["4bit", "8bit"], help="QLoRA: load the base quantised")
    ap.add_argument("--base-vlm", type=Path, help="HF-layout checkpoint to load (default: random weights)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "train.json")
    args = ap.parse_args()
    if args.lora_quant and not args.lora_rank:
        ap.error("--lora-quant trains LoRA adapters on the quantised base: set --lora-rank too")
    if args.model == "7b" and args.lora_quant and args.base_vlm is None:
        ap.error("--lora-quant with --model 7b needs --base-vlm DIR (the random 7B is never written to disk)")
    if args.threads:
        torch.set_num_threads(args.threads)

    dtype = torch.bfloat16 if args.model == "7b" else torch.float32
    model = build(args.model, args.device, args.lora_rank, args.lora_quant, args.base_vlm)
    weights = weights_mib(model)
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
        "model": str(args.base_vlm or args.model), "device": args.device, "batch": args.batch,
        "lora_rank": args.lora_rank, "lora_quant": args.lora_quant, "weights_mib": weights,
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
