"""Benchmark actions per second of the action heads: chunked parallel decoding against OpenVLA's bins.

One backbone (vision, projector, LLM: the same weights), three heads, the same inputs, timed interleaved in
one process, each call from images and instructions to un-normalised actions (`VLA.predict_chunks`):

    bins            OpenVLA: 7 bin tokens generated one by one (a prefill, then 6 cached steps) -> 1 action
    l1-regression   OpenVLA-OFT: all K x 7 slots in one bidirectional forward pass, MLP-ResNet -> K actions
    bins-parallel   OpenVLA-OFT's discrete variant: one pass, the LM head's argmax at each slot -> K actions

actions/s counts every action of every chunk (batch x K per call); `ratio_vs_bins` divides by the bin
head's actions/s measured in the same run. Every head sees the same cameras and proprio (`--cameras`,
`--proprio-dim`), so only the formulation differs.

    .venv/bin/python scripts/bench_heads.py --model tiny --device cpu --threads 1 --out bench_results/heads_cpu_tiny.json
    python scripts/bench_heads.py --model 7b --device cuda --dtype bfloat16 --cameras primary,wrist --proprio-dim 8 \
        --out bench_results/gpu/heads_7b.json          # OpenVLA-OFT's LIBERO inputs; random weights
    .venv/bin/python scripts/bench_heads.py --model 7b --computed-only --cameras primary,wrist --proprio-dim 8 \
        --out bench_results/heads_7b_computed.json     # no weights: FLOPs, bytes and the bounds they imply

`--model tiny` is the tiny reference checkpoint (tests/assets/openvla-tiny, fp32) with fresh parallel heads
(random weights: the timing does not depend on them); `--model 7b` the openvla-7b architecture with random
weights built on the device (`build_random_on_device`), the backbone copied into every head's model.
The report also has, for each head, the matrix FLOPs of one call (`torch.utils.flop_counter` on the meta
device) and the LLM bytes it reads, and on a GPU the bounds they give with the ceilings measured in the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing

from bench_common import DATASHEET_BF16_TFLOPS, gpu_ceilings, machine_info, sync, timed, write_report  # noqa: E402

import prismatic  # noqa: E402
from prismatic.models.configuration import OpenVLAConfig  # noqa: E402
from prismatic.models.heads import ACTION_HEADS  # noqa: E402
from prismatic.models.load import build_processor, build_random_on_device  # noqa: E402
from prismatic.models.vla import VLA  # noqa: E402

TINY = REPO / "tests" / "assets" / "openvla-tiny" / "checkpoint"
KEY = "bridge_orig"  # the statistics both reference configs carry
INSTRUCTIONS = ("put the carrot on the plate", "pick up the red block", "open the top drawer of the cabinet",
                "close the microwave", "stack the blue cup on the green cup")  # fmt: skip
HEADS = ("bins", "l1-regression", "bins-parallel")
DATASHEET_TB_S = {"H200": 4.8, "H100 80GB HBM3": 3.35, "H100 SXM": 3.35, "H100 PCIe": 2.0, "A100": 2.0}
OFT_A100_ACTIONS_PER_S = 109.0  # OpenVLA-OFT's paper: openvla-7b, L1 head, chunks of 8, two images + proprio, A100


def head_settings(head: str, args: argparse.Namespace) -> dict:
    """Config fields of one head: the bin head decodes single actions, the parallel heads chunks of K."""
    return {"action_head": head, "chunk_len": 1 if head == "bins" else args.chunk_len, "action_dim": 7,
            "cameras": args.cameras, "proprio_dim": args.proprio_dim}  # fmt: skip


def statistics_7b(proprio_dim: int) -> dict:
    stats = json.loads((TINY / "config.json").read_text())["norm_stats"]
    if proprio_dim:  # identity statistics for the proprioceptive state
        p = proprio_dim
        stats[KEY]["proprio"] = {"q01": [-1.0] * p, "q99": [1.0] * p, "min": [-1.0] * p, "max": [1.0] * p,
                                 "mean": [0.0] * p, "std": [1.0] * p, "mask": [True] * p}  # fmt: skip
    return stats


def build(head: str, args: argparse.Namespace, dtype: torch.dtype, backbone: VLA | None) -> VLA:
    settings = head_settings(head, args)
    if args.model == "tiny":
        if args.proprio_dim:
            raise SystemExit("--proprio-dim: the tiny reference has no proprio statistics; use --model 7b")
        return prismatic.load_vla(TINY, device=args.device, dtype=dtype, new_action_modules=True, **settings)
    from transformers import AutoTokenizer

    config = OpenVLAConfig(norm_stats=statistics_7b(args.proprio_dim), **settings)
    model = build_random_on_device(config, args.device, dtype)
    if backbone is not None:  # the same vision, projector and LLM weights as the first head's model
        shared = {k: v for k, v in backbone.model.state_dict().items() if not k.startswith(("action_head.", "proprio_projector."))}
        model.load_state_dict(shared, strict=False)
    return VLA(model.eval(), build_processor(config, AutoTokenizer.from_pretrained(TINY, trust_remote_code=False)))


def inputs(vla: VLA, batch: int) -> tuple[list, list[str], np.ndarray | None]:
    images = [Image.open(p).convert("RGB") for p in sorted((TINY.parent / "cases").glob("*.png"))]
    views = [[images[(i + c) % len(images)] for c in range(len(vla.cameras))] for i in range(batch)]
    instructions = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch)]
    proprio = np.zeros((batch, vla.proprio_dim)) if vla.proprio_dim else None
    return views, instructions, proprio


# -- what one call costs, computed ----------------------------------------------------------------------
def call_cost(config: OpenVLAConfig, batch: int, prompt_len: int) -> dict:
    """Matrix FLOPs and LLM weight bytes of one prediction call, counted on the meta device (no weights).

    bins: a prefill of the prompt (+ "▁"), then 6 single-token steps over the cache; parallel heads: one pass
    over the prompt, the K x D slots and the stop token. The vision backbone and projector run once per call."""
    from torch.utils.flop_counter import FlopCounterMode

    from prismatic.models.modeling import OpenVLAForActionPrediction

    with torch.device("meta"):
        model = OpenVLAForActionPrediction(config).to(torch.bfloat16)
    head = model.action_head
    prefix = 1 + model.num_patches  # BOS + every camera's patches (+ the proprio token)
    text = prompt_len + 1  # the prompt after BOS, + the empty token "▁"
    hidden = config.text_config.hidden_size
    decoder = model.get_decoder()
    dev = dict(device="meta", dtype=torch.bfloat16)

    def run_decoder(seq: int) -> None:
        # an explicit 4-D mask: transformers then derives nothing from the (meta) values; attention FLOPs are
        # counted over the full S x S either way
        mask = torch.zeros(batch, 1, seq, seq, **dev)
        decoder(inputs_embeds=torch.empty(batch, seq, hidden, **dev), attention_mask=mask, use_cache=False)

    def flops(fn) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    channels = 3 * len(model.config.timm_model_ids) * len(config.cameras)
    size = model.config.image_sizes[0]
    vision = flops(lambda: model.projector(model.vision_backbone(torch.empty(batch, channels, size, size, **dev))))
    lm_head_row = 2 * hidden * config.text_config.vocab_size * batch
    skip = {id(p) for p in model.get_input_embeddings().parameters()}
    llm_bytes = sum(p.numel() * p.element_size() for p in model.language_model.parameters() if id(p) not in skip)
    vision_bytes = sum(p.numel() * p.element_size() for m in (model.vision_backbone, model.projector) for p in m.parameters())
    if head.parallel:
        seq = prefix + text + head.num_slots() + 1
        head_flops = lm_head_row * head.num_slots() if head.uses_lm_head else 2 * batch * head.chunk_len * sum(
            p.numel() for p in head.parameters())  # the L1 head's MLP runs once per chunk step
        passes = [(vision + flops(lambda: run_decoder(seq)) + head_flops, vision_bytes + llm_bytes)]
    else:
        seq = prefix + text
        n = head.num_slots(7)
        passes = [(vision + flops(lambda: run_decoder(seq)) + lm_head_row, vision_bytes + llm_bytes)]
        # a cached step: one token of linear work, plus its attention over the cache so far
        per_token = flops(lambda: run_decoder(1))
        layers = config.text_config.num_hidden_layers
        passes += [(per_token + 4 * batch * (seq + i) * hidden * layers + lm_head_row, llm_bytes) for i in range(1, n)]
    return {"sequence": seq, "passes": len(passes), "actions_per_call": batch * head.chunk_len,
            "flops": sum(f for f, _ in passes), "flops_vision": vision, "bytes_read_bf16": sum(b for _, b in passes),
            "per_pass": passes}  # fmt: skip


def bounds(cost: dict, tflops: float, tb_s: float) -> dict:
    """Upper bound on actions/s: each pass takes at least its FLOPs at peak rate and its bytes at full bandwidth."""
    seconds = sum(max(f / (tflops * 1e12), b / (tb_s * 1e12)) for f, b in cost["per_pass"])
    return {"seconds_per_call": float(f"{seconds:.4g}"), "actions_per_s": round(cost["actions_per_call"] / seconds, 1)}


def computed(args: argparse.Namespace, batch: int) -> dict:
    """The bounds of every head on an H100 SXM / H200 (datasheet peak and bandwidth), and the projection at the
    efficiency OpenVLA-OFT's own A100 figure implies (109 actions/s for chunks of 8, two images + proprio)."""
    from transformers import AutoTokenizer

    from prismatic.models.llm.prompting import build_vla_prompt

    tokenizer = AutoTokenizer.from_pretrained(TINY, trust_remote_code=False)  # Llama-2's
    prompt_len = len(tokenizer(build_vla_prompt(INSTRUCTIONS[0])).input_ids) - 1  # after BOS: 20 tokens
    out = {}
    for head in HEADS:
        config = OpenVLAConfig(norm_stats=statistics_7b(args.proprio_dim), **head_settings(head, args))
        cost = call_cost(config, batch, prompt_len)
        out[head] = {**cost, "bound_h100_sxm": bounds(cost, DATASHEET_BF16_TFLOPS["H100 SXM"], DATASHEET_TB_S["H100 SXM"]),
                     "bound_h200": bounds(cost, DATASHEET_BF16_TFLOPS["H200"], DATASHEET_TB_S["H200"]),
                     "bound_a100": bounds(cost, DATASHEET_BF16_TFLOPS["A100"], DATASHEET_TB_S["A100"])}  # fmt: skip
    for head in ("l1-regression", "bins-parallel") if batch == 1 else ():  # OFT's figure is for batch 1
        r = out[head]
        efficiency = OFT_A100_ACTIONS_PER_S / r["bound_a100"]["actions_per_s"]  # share of the A100 bound OFT reached
        r["at_oft_a100_efficiency"] = {"efficiency": round(efficiency, 3),
                                       "h100_sxm_actions_per_s": round(efficiency * r["bound_h100_sxm"]["actions_per_s"], 1),
                                       "h200_actions_per_s": round(efficiency * r["bound_h200"]["actions_per_s"], 1)}  # fmt: skip
    for gpu in ("bound_h100_sxm", "bound_h200"):
        base = out["bins"][gpu]["actions_per_s"]
        for head in ("l1-regression", "bins-parallel"):
            out[head][gpu]["ratio_vs_bins"] = round(out[head][gpu]["actions_per_s"] / base, 1)
    return out


# -- measured -------------------------------------------------------------------------------------------
def bench_batch(vlas: dict[str, VLA], batch: int, device: str, warmup: int, iters: int) -> dict:
    calls, result = {}, {}
    for head, vla in vlas.items():
        views, instructions, proprio = inputs(vla, batch)
        calls[head] = lambda v=vla, a=views, i=instructions, p=proprio: v.predict_chunks(a, i, unnorm_key=KEY, proprio=p)
        chunk = calls[head]()
        result[head] = {"chunk_shape": list(chunk.shape), "finite": bool(np.isfinite(chunk).all())}
    times = timed(list(calls.values()), device, warmup, iters)
    for r, seconds in zip(result.values(), times):
        med = statistics.median(seconds)
        actions = r["chunk_shape"][0] * r["chunk_shape"][1]
        r.update(median_ms=round(med * 1e3, 3), p90_ms=round(float(np.percentile(seconds, 90)) * 1e3, 3),
                 calls_per_s=round(1 / med, 2), actions_per_s=round(actions / med, 2), iters=len(seconds))  # fmt: skip
    base = result["bins"]["actions_per_s"]
    result["ratio_vs_bins"] = {h: round(result[h]["actions_per_s"] / base, 2) for h in vlas if h != "bins"}
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=["tiny", "7b"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--chunk-len", type=int, default=8, help="K of the parallel heads (OpenVLA-OFT: 8 for LIBERO)")
    ap.add_argument("--cameras", default="primary", help="comma-separated camera views, the same for every head")
    ap.add_argument("--proprio-dim", type=int, default=0, help="proprio token size, the same for every head (0: none)")
    ap.add_argument("--batch-sizes", default="1", help="comma-separated batch sizes")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--computed-only", action="store_true", help="only the computed costs and bounds (--model 7b; no weights)")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "heads.json")
    args = ap.parse_args(argv)
    missing = [h for h in HEADS if h not in ACTION_HEADS]
    if missing:
        ap.error(f"heads {missing} are not registered in prismatic.models.heads (registered: {', '.join(ACTION_HEADS)})")
    if args.chunk_len < 1 or args.proprio_dim < 0 or args.iters < 1 or args.warmup < 0:
        ap.error("--chunk-len and --iters must be >= 1, --proprio-dim and --warmup >= 0")
    args.cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    if not args.cameras or len(set(args.cameras)) != len(args.cameras):
        ap.error(f"--cameras must name distinct camera views, got {args.cameras}")
    if args.model == "tiny" and (args.proprio_dim or len(args.cameras) > 1 or args.computed_only):
        ap.error("--proprio-dim, several --cameras and --computed-only need --model 7b (the tiny reference has one camera)")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA device is visible")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    report: dict = {"benchmark": "heads", "args": sys.argv[1:] if argv is None else list(argv), "model": args.model, "device": args.device, "dtype": str(dtype)[6:],
                    "chunk_len": args.chunk_len, "cameras": args.cameras, "proprio_dim": args.proprio_dim,
                    "machine": machine_info(args.device), "load_average_before": os.getloadavg()}  # fmt: skip
    if args.model == "7b":
        report["computed"] = {f"b{b}": computed(args, b) for b in args.batch_sizes}
    if not args.computed_only:
        t = time.perf_counter()
        vlas: dict[str, VLA] = {}
        for head in HEADS:
            vlas[head] = build(head, args, dtype, vlas.get("bins"))
        sync(args.device)
        report["build_s"] = round(time.perf_counter() - t, 2)
        report["params_m"] = {h: round(sum(p.numel() for p in v.model.parameters()) / 1e6, 2) for h, v in vlas.items()}
        if cuda:
            report["ceilings"] = gpu_ceilings()
        report["results"] = {f"b{b}": bench_batch(vlas, b, args.device, args.warmup, args.iters) for b in args.batch_sizes}
        if cuda and "computed" in report:  # how close each head came to the bound of the ceilings measured here
            c = report["ceilings"]
            for batch, by_head in report["computed"].items():
                for head, cost in by_head.items():
                    bound = bounds(cost, c["bf16_matmul_tflops"], c["copy_bandwidth_gb_s"] / 1e3)
                    bound["reached"] = round(report["results"][batch][head]["actions_per_s"] / bound["actions_per_s"], 3)
                    cost["bound_measured_ceilings"] = bound
        if cuda:
            report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    report["load_average_after"] = os.getloadavg()
    write_report(args.out, report)
    for batch, r in report.get("results", {}).items():
        cells = ", ".join(f"{h} {r[h]['median_ms']:.1f} ms/call = {r[h]['actions_per_s']:.1f} actions/s" for h in HEADS)
        ratios = ", ".join(f"{h} {x}x" for h, x in r["ratio_vs_bins"].items())
        print(f"{batch}: {cells}; vs bins: {ratios}")
    print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
