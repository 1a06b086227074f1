"""Benchmark training steps (forward, backward, AdamW step) on one batch, in the same process and run.

Variants, timed interleaved on the same model and batch:

    ours      the LM head only at the labelled positions (`return_label_logits=True`, what training runs)
    baseline  full-sequence logits and transformers' loss (what the original runs)

Reported: steps/s, samples/s, LLM tokens/s (multimodal sequence x batch), peak GPU memory per variant,
the model's weight bytes by kind, and on a GPU the model FLOPs utilisation (MFU) against the datasheet's
dense bf16 peak and against the bf16 matrix rate measured in the same run.

Model FLOPs per step (the MFU numerator) = 3 x the FLOPs of one forward pass over the batch, as counted by
`torch.utils.flop_counter` (every matrix product the forward runs: vision blocks, projector, LLM layers,
attention at full S x S, the LM head at the positions the variant computes). The factor 3 is the usual
forward + backward (input and weight gradients) convention; recomputation by activation checkpointing is
work the hardware does but not counted (so MFU is lower with it on), as are norms and activations. With
LoRA the frozen base gets no weight gradients, so 3x overstates its work: MFU is reported for full
training only.

    # tiny model on CPU
    .venv/bin/python scripts/bench_train.py --model tiny --device cpu --batch 16 --out bench_results/train_cpu_tiny.json
    # 7B architecture (random weights), LoRA r=32 on all linear layers, batch 16, activation checkpointing
    python scripts/bench_train.py --model 7b --lora-rank 32 --batch 16 --device cuda --out bench_results/train_gpu_7b_lora.json
    # the same on a 4-bit base (QLoRA; the random base is quantised in memory)
    python scripts/bench_train.py --model 7b --lora-rank 32 --lora-quant 4bit --batch 16 --device cuda
    # full-shard FSDP2 (prismatic.training.distributed.parallelize) of a ~1.2B VLA (DINOv2+SigLIP, Qwen2.5-0.5B)
    # on one GPU: fp32 master weights, bf16 compute; torchrun for several GPUs
    python scripts/bench_train.py --model 1b --fsdp --batch 16 --variants ours --device cuda
    # QLoRA from a checkpoint, loaded as finetune.py does; tiny/small are written once as a random checkpoint
    .venv/bin/python scripts/bench_train.py --model small --lora-rank 32 --lora-quant 4bit --device cpu
    python scripts/bench_train.py --base-vlm /ckpts/openvla-7b --lora-rank 32 --lora-quant 4bit --device cuda
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_common import datasheet_bf16_tflops, gpu_ceilings, machine_info, timed, write_report  # noqa: E402

from prismatic.constants import IGNORE_INDEX  # noqa: E402
from prismatic.training.config import LoRAConfig, ParallelConfig, TrainConfig, VLAConfig  # noqa: E402
from prismatic.training.model_setup import build_model_and_processor  # noqa: E402

# Full-size architectures built with random weights on the device (no checkpoint): id -> OpenVLAConfig fields.
RANDOM_ARCHS = {"7b": {}, "1b": {"llm_backbone_id": "qwen2.5-0.5b-pure"}}


def build(model: str, device: str, dtype: torch.dtype, lora: LoRAConfig | None, base_vlm: Path | None):
    if base_vlm is not None or (lora is not None and lora.quantization and model in ("tiny", "small")):
        # The training path: the base loaded from a checkpoint (quantised onto the device with --lora-quant).
        with tempfile.TemporaryDirectory(prefix="bench-base-") as tmp:
            if base_vlm is None:  # tiny / small: random weights, written as a checkpoint to load from
                base_vlm = Path(tmp)
                random_init = TrainConfig(vla=VLAConfig(size=model, image_size=224), data_root=Path("."))
                build_model_and_processor(random_init).save_pretrained(base_vlm)
            v = VLAConfig(base_vlm=base_vlm, size="full")
            return build_model_and_processor(TrainConfig(vla=v, data_root=Path("."), lora=lora or LoRAConfig()), device).model
    if model in ("tiny", "small"):
        v = VLAConfig(size=model, image_size=224)
        return build_model_and_processor(TrainConfig(vla=v, data_root=Path("."))).model
    # Full-size architecture, random weights, straight on the device (quantised in memory for QLoRA).
    from prismatic.models.configuration import OpenVLAConfig
    from prismatic.models.load import build_random_on_device

    quantize = lora.quantization if lora is not None else None
    return build_random_on_device(OpenVLAConfig(norm_stats={}, **RANDOM_ARCHS[model]), device, dtype, quantize=quantize)


def weights_mib(model: torch.nn.Module) -> dict[str, float]:
    """Tensor bytes held by the model, by kind: the Linear layers QLoRA quantises (all but the projector and
    the LM head; packed weights + scales when quantised), the other base tensors, the LoRA adapters."""
    from prismatic.models.quantization import SKIP_MODULES

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


def batch(b: int, device: str, dtype: torch.dtype, channels: int, image: int = 224, text: int = 24):
    """A VLA-shaped batch: a 24-token prompt whose last 8 tokens are labelled (7 actions + EOS)."""
    ids = torch.randint(3, 31000, (b, text), device=device)
    ids[:, 0] = 1
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -8:] = ids[:, -8:]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "pixel_values": torch.randn(b, channels, image, image, device=device, dtype=dtype)}  # fmt: skip


def forward_flops(model: torch.nn.Module, data: dict, label_only: bool) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**data, return_label_logits=label_only)
    return counter.get_total_flops()


def init_process_group(device: str) -> None:
    """A process group for FSDP: torchrun's, or a single-rank one when run directly."""
    import os

    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29512")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    dist.init_process_group("nccl" if device == "cuda" else "gloo")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=["tiny", "small", "1b", "7b"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lora-rank", type=int, default=None, help="LoRA on all linear layers (default: full training)")
    ap.add_argument("--lora-quant", choices=["4bit", "8bit"], help="QLoRA: the base quantised with bitsandbytes")
    ap.add_argument("--base-vlm", type=Path, help="HF-layout checkpoint to load (default: random weights)")
    ap.add_argument("--act-ckpt", choices=["auto", "on", "off"], default="auto",
                    help="activation checkpointing of decoder layers and ViT blocks (auto: on for 1b/7b, as training)")  # fmt: skip
    ap.add_argument("--fsdp", action="store_true", help="full_shard FSDP2 (one rank without torchrun)")
    ap.add_argument("--variants", default="baseline,ours", help="comma-separated: ours, baseline")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "train.json")
    args = ap.parse_args()
    variants = args.variants.split(",")
    if set(variants) - {"ours", "baseline"}:
        ap.error(f"--variants takes ours and/or baseline, got {args.variants!r}")
    if args.lora_quant and not args.lora_rank:
        ap.error("--lora-quant trains LoRA adapters on the quantised base: set --lora-rank too")
    if args.fsdp and args.lora_quant:
        ap.error("FSDP cannot shard a bitsandbytes-quantised base: drop --fsdp for QLoRA")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    big = args.model in RANDOM_ARCHS or args.base_vlm is not None
    act_ckpt = args.act_ckpt == "on" or (args.act_ckpt == "auto" and big)
    # Weights: bf16 for a LoRA base on the GPU (as HF checkpoints load); fp32 master weights for full training
    # (bf16 compute through FSDP's mixed precision or autocast, as the trainer does).
    dtype = torch.bfloat16 if cuda and args.lora_rank else torch.float32
    lora = None
    if args.lora_rank:
        lora = LoRAConfig(enabled=True, rank=args.lora_rank, alpha=min(args.lora_rank, 16), quantization=args.lora_quant)

    model = build(args.model, args.device, dtype, lora, args.base_vlm)
    channels = 6 if model.config.use_fused_vision_backbone else 3
    data = batch(args.batch, args.device, dtype, channels)
    seq = data["input_ids"].shape[1] + model.num_patches  # LLM sequence: prompt + image patches
    if lora is not None:
        from prismatic.training.lora import wrap_with_lora

        model = wrap_with_lora(model, lora)
    model = model.to(args.device).train()
    from prismatic.training.distributed import DistInfo, apply_activation_checkpointing, is_fsdp, parallelize

    if args.fsdp:
        init_process_group(args.device)
        model = parallelize(model, ParallelConfig(sharding="full_shard", activation_checkpointing=act_ckpt),
                            DistInfo(0, 0, 1, torch.device(args.device)))  # fmt: skip
    elif act_ckpt:
        apply_activation_checkpointing(model)
    weights = weights_mib(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and not args.fsdp)

    def step(label_only: bool) -> None:
        with autocast:
            out = model(**data, return_label_logits=label_only)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    results: dict = {}
    for name in variants:
        label_only = name == "ours"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = timed([lambda label_only=label_only: step(label_only)], args.device, args.warmup, args.iters)[0]
        med = statistics.median(times)
        r = {"median_step_s": round(med, 4), "steps_per_s": round(1 / med, 3), "samples_per_s": round(args.batch / med, 2),
             "llm_tokens_per_s": round(args.batch * seq / med, 1)}  # fmt: skip
        if cuda:
            r["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        with autocast:
            r["model_flops_per_step"] = 3 * forward_flops(model, data, label_only)
        results[name] = r
    if len(variants) == 2:
        results["speedup"] = round(results["baseline"]["median_step_s"] / results["ours"]["median_step_s"], 3)
    results["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    machine = machine_info(args.device)
    report = {
        "benchmark": "train_step", "model": str(args.base_vlm or args.model), "device": args.device,
        "batch": args.batch, "llm_sequence": seq, "lora_rank": args.lora_rank, "lora_quant": args.lora_quant,
        "fsdp": is_fsdp(model), "activation_checkpointing": act_ckpt, "weights_dtype": str(dtype)[6:],
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "trainable_params_m": round(sum(p.numel() for p in params) / 1e6, 3), "weights_mib": weights,
        "machine": machine, "results": results,
    }  # fmt: skip
    if cuda:
        report["ceilings"] = gpu_ceilings()
        if lora is None:  # MFU: full training only (see the module doc)
            sheet = datasheet_bf16_tflops(machine["gpu"])
            for name in variants:
                achieved = results[name]["model_flops_per_step"] / results[name]["median_step_s"] / 1e12
                results[name]["model_tflops"] = round(achieved, 1)
                results[name]["mfu_datasheet"] = round(achieved / sheet, 4) if sheet else None
                results[name]["mfu_measured_ceiling"] = round(achieved / report["ceilings"]["bf16_matmul_tflops"], 4)
    write_report(args.out, report)


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
