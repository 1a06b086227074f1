"""Benchmark action prediction: the fast decoding path against the eager loop and a plain `generate` loop.

Modes, all on the same model, weights and inputs, timed interleaved in one process:

    generate  the original's way: `model.generate(..., max_new_tokens=7)`, then the last 7 tokens decoded
    eager     `predict_action`'s own loop on transformers' dynamic cache (`decode="eager"`)
    static    the static KV cache (`decode="static"`; prismatic/models/decoding.py)
    graphs    the static cache with the 6 decoding steps replayed as one CUDA graph (`decode="graphs"`, CUDA)

Each timed call goes from processed inputs to un-normalised actions (tokens, `.cpu()`, decoding). Batches
above 1 use instructions of different lengths (left padding). Every mode's action tokens are compared with
the eager loop's (exact ids). On a GPU the report also has the ceilings measured in the same run and the
bandwidth bound on actions/s at batch 1 (every LLM weight read once per token: 1 prefill + 6 steps).

    .venv/bin/python scripts/bench_inference.py --model tiny --device cpu --threads 1 --out bench_results/inference_cpu_tiny.json
    python scripts/bench_inference.py --model 7b --device cuda --dtype bfloat16 --batch-sizes 1,8 --out bench_results/inference_gpu_7b.json
    python scripts/bench_inference.py --model 7b --device cuda --quantize 4bit --out bench_results/inference_gpu_7b_4bit.json

`--model 7b` is the full openvla-7b architecture with random weights, built on the meta device and
materialised on the target device (quantised in memory with --quantize); `--model DIR` loads a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing

from bench_common import gpu_ceilings, machine_info, sync, timed, write_report  # noqa: E402

import prismatic  # noqa: E402
from prismatic.models.configuration import OpenVLAConfig  # noqa: E402
from prismatic.models.decoding import decoder_for  # noqa: E402
from prismatic.models.load import build_processor, build_random_on_device  # noqa: E402
from prismatic.models.quantization import weight_memory  # noqa: E402
from prismatic.models.vla import VLA  # noqa: E402

TINY = REPO / "tests" / "assets" / "openvla-tiny"
INSTRUCTIONS = ("put the carrot on the plate", "pick up the red block", "open the top drawer of the cabinet",
                "close the microwave", "stack the blue cup on the green cup")  # fmt: skip
MODES = ("generate", "eager", "static", "graphs")
EMPTY = 29871  # the "▁" the original appends before the action tokens
DATASHEET_TB_S = {"H200": 4.8, "H100 80GB HBM3": 3.35, "H100 SXM": 3.35, "H100 PCIe": 2.0, "A100": 2.0}


def head_settings(head: str) -> dict:
    """Config fields of a chunked action head (the OpenVLA-OFT LIBERO release's: two cameras, proprio,
    chunks of 8), from the action-head registry; a clear error where this checkout has none."""
    try:
        from prismatic.models.heads import ACTION_HEADS
    except ImportError as e:
        raise SystemExit(f"--head {head}: this checkout has no action-head registry (prismatic.models.heads)") from e
    if head not in ACTION_HEADS:
        raise SystemExit(f"--head {head!r} is not registered; registered: {', '.join(ACTION_HEADS)}")
    from prismatic.models.oft import OFT_LIBERO

    return {**OFT_LIBERO, "action_head": head}


def build(model: str, device: str, dtype: torch.dtype, quantize: str | None, head: str = "bins") -> VLA:
    if model == "tiny":
        return prismatic.load_vla(TINY / "checkpoint", device=device, dtype=dtype, quantize=quantize)
    if model != "7b":
        return prismatic.load_vla(model, device=device, dtype=dtype, quantize=quantize)  # a local checkpoint
    from transformers import AutoTokenizer

    stats = json.loads((TINY / "checkpoint" / "config.json").read_text())["norm_stats"]
    settings = head_settings(head) if head != "bins" else {}
    if settings.get("proprio_dim"):  # identity statistics for the proprioceptive state
        p = settings["proprio_dim"]
        stats["bridge_orig"]["proprio"] = {"q01": [-1.0] * p, "q99": [1.0] * p, "min": [-1.0] * p, "max": [1.0] * p,
                                           "mean": [0.0] * p, "std": [1.0] * p, "mask": [True] * p}  # fmt: skip
    config = OpenVLAConfig(norm_stats=stats, **settings)
    m = build_random_on_device(config, device, dtype, quantize=quantize)
    return VLA(m.eval(), build_processor(config, AutoTokenizer.from_pretrained(TINY / "checkpoint")))


def summary(seconds: list[float], batch: int) -> dict:
    med = statistics.median(seconds)
    return {"median_ms": round(med * 1e3, 3), "p90_ms": round(float(np.percentile(seconds, 90)) * 1e3, 3),
            "actions_per_s": round(batch / med, 2), "iters": len(seconds)}  # fmt: skip


def llm_read_bytes(model: torch.nn.Module) -> int:
    """Bytes one decoding pass reads at least: every LLM weight but the input embeddings (one row each)."""
    lm, embed = model.language_model, model.get_input_embeddings()
    skip = {id(p) for p in embed.parameters()}
    return sum(p.numel() * p.element_size() for p in lm.parameters() if id(p) not in skip)


def bench_batch(vla: VLA, batch: int, modes: list[str], device: str, warmup: int, iters: int) -> dict:
    model, processor, key = vla.model, vla.processor, "bridge_orig"
    images = [Image.open(p) for p in sorted((TINY / "cases").glob("*.png"))]
    instructions = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch)]
    inputs = processor([vla.prompt(i) for i in instructions], [images[i % len(images)] for i in range(batch)])
    inputs = inputs.to(device)
    ids, mask, pixels = inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"].to(model.dtype)
    ids_e = torch.cat([ids, torch.full((batch, 1), EMPTY, device=device)], dim=1)
    mask_e = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1) if batch > 1 else None

    def tokens(mode: str) -> torch.Tensor:
        if mode == "generate":
            with torch.inference_mode():
                out = model.generate(input_ids=ids_e, attention_mask=mask_e, pixel_values=pixels, max_new_tokens=7,
                                     do_sample=False)  # fmt: skip
            return out[:, -7:]
        return model.generate_action_tokens(ids, pixels, mask, n_tokens=7, decode=mode)

    result: dict = {}
    if "graphs" in modes:  # the first call captures: its time is the one-off cost per (batch, cache bucket)
        sync(device)
        t = time.perf_counter()
        tokens("graphs")
        sync(device)
        result["graphs_first_call_ms"] = round((time.perf_counter() - t) * 1e3, 1)
        result["graphs_capture_error"] = decoder_for(model).capture_error
    ids_by_mode = {m: tokens(m).cpu() for m in modes}
    ref = ids_by_mode["eager"] if "eager" in ids_by_mode else next(iter(ids_by_mode.values()))
    result["identical_tokens"] = {m: bool(torch.equal(t, ref)) for m, t in ids_by_mode.items()}
    result["token_agreement"] = {m: float((t == ref).float().mean()) for m, t in ids_by_mode.items()}
    fns = [lambda m=m: model.decode_actions(tokens(m).cpu().numpy(), key) for m in modes]
    times = timed(fns, device, warmup, iters)
    for m, t in zip(modes, times):
        result[m] = summary(t, batch)
    for base in ("generate", "eager"):
        if base in modes:
            result[f"speedup_vs_{base}"] = {
                m: round(statistics.median(times[modes.index(base)]) / statistics.median(t), 3) for m, t in zip(modes, times)
            }
    return result


def bench_chunks(vla: VLA, batch: int, device: str, warmup: int, iters: int) -> dict:
    """A chunked head (`--head`): `VLA.predict_chunks` ([B, T, D] per call), one image per camera."""
    images = [Image.open(p) for p in sorted((TINY / "cases").glob("*.png"))]
    views = [[images[(i + c) % len(images)] for c in range(len(vla.cameras))] for i in range(batch)]
    instructions = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch)]
    proprio = np.zeros((batch, vla.proprio_dim)) if vla.proprio_dim else None
    chunk = vla.predict_chunks(views, instructions, unnorm_key="bridge_orig", proprio=proprio)
    (seconds,) = timed([lambda: vla.predict_chunks(views, instructions, unnorm_key="bridge_orig", proprio=proprio)],
                       device, warmup, iters)  # fmt: skip
    out = summary(seconds, batch * chunk.shape[1])  # actions/s counts every step of every chunk
    out.update(chunk_shape=list(chunk.shape), chunks_per_s=round(batch / statistics.median(seconds), 2),
               finite=bool(np.isfinite(chunk).all()))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (reference checkpoint), '7b' (random weights) or a path")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="default: bfloat16 on CUDA, float32 on CPU")  # fmt: skip
    ap.add_argument("--quantize", choices=["8bit", "4bit"], help="bitsandbytes weights (prismatic.models.quantization)")
    ap.add_argument("--head", default="bins", help="action head of --model 7b: bins (OpenVLA) or a chunked head "
                    "registered in prismatic.models.heads (e.g. l1-regression, OpenVLA-OFT), timed with predict_chunks")  # fmt: skip
    ap.add_argument("--batch-sizes", default="1,4", help="comma-separated batch sizes")
    ap.add_argument("--modes", default=None, help=f"comma-separated, of {', '.join(MODES)} (default: all the device runs)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "inference.json")
    args = ap.parse_args()
    cuda = torch.device(args.device).type == "cuda"
    modes = args.modes.split(",") if args.modes else [m for m in MODES if cuda or m != "graphs"]
    if unknown := set(modes) - set(MODES):
        ap.error(f"unknown --modes {sorted(unknown)}; choose from: {', '.join(MODES)}")
    if args.head != "bins" and args.model != "7b":
        ap.error("--head builds the random 7B architecture with that head: use --model 7b")
    if "graphs" in modes and not cuda:
        ap.error("mode 'graphs' captures CUDA graphs: it needs --device cuda")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))

    t = time.perf_counter()
    vla = build(args.model, args.device, dtype, args.quantize, args.head)
    sync(args.device)
    report: dict = {"benchmark": "inference", "model": args.model, "head": args.head, "device": args.device, "dtype": str(dtype)[6:],
                    "quantize": args.quantize, "build_s": round(time.perf_counter() - t, 2),
                    "params_m": round(sum(p.numel() for p in vla.model.parameters()) / 1e6, 2),
                    "weights": weight_memory(vla.model), "machine": machine_info(args.device), "results": {}}  # fmt: skip
    if cuda:
        report["gpu_memory_after_build_gib"] = round(torch.cuda.memory_allocated() / 2**30, 3)
        report["ceilings"] = gpu_ceilings()
        llm_bytes = llm_read_bytes(vla.model)
        sheet = next((v for k, v in DATASHEET_TB_S.items() if k in report["machine"]["gpu"]), None)
        report["bandwidth_bound_b1"] = {
            "llm_bytes_per_pass": llm_bytes,
            "actions_per_s_measured_bandwidth": round(report["ceilings"]["copy_bandwidth_gb_s"] * 1e9 / (7 * llm_bytes), 1),
            "actions_per_s_datasheet_bandwidth": round(sheet * 1e12 / (7 * llm_bytes), 1) if sheet else None,
        }  # fmt: skip
        torch.cuda.reset_peak_memory_stats()
    for b in batch_sizes:
        if args.head != "bins":
            report["results"][f"b{b}"] = bench_chunks(vla, b, args.device, args.warmup, args.iters)
        else:
            report["results"][f"b{b}"] = bench_batch(vla, b, modes, args.device, args.warmup, args.iters)
    if cuda:
        report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    write_report(args.out, report)
    if args.head != "bins":
        return
    print(f"\n{'batch':>5} " + " ".join(f"{m:>18}" for m in modes) + "   identical tokens")
    for b in batch_sizes:
        r = report["results"][f"b{b}"]
        cells = " ".join(f"{r[m]['median_ms']:>8.1f} ms {r[m]['actions_per_s']:>5.1f}/s" for m in modes)
        print(f"{b:>5} {cells}   {all(r['identical_tokens'].values())}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
