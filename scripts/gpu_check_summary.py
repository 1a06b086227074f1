"""Print the numbers of a `scripts/gpu_check.sh` run as one short table (the device tool returns the end of the
output): each part's status, then per part the figures the issue asks for, with the targets next to them.

    python scripts/gpu_check_summary.py bench_results/gpu
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def inference(name: str, r: dict) -> list[str]:
    lines = [f"{name}: {r['machine'].get('gpu', r['device'])}, {r['dtype']}, quantize={r.get('quantize')}, "
             f"weights {r['weights']['weight_bytes'] / 2**30:.2f} GiB "
             f"(unquantised {r['weights']['unquantized_bytes'] / 2**30:.2f} GiB), built in {r['build_s']} s"]  # fmt: skip
    if "ceilings" in r:
        bound = r["bandwidth_bound_b1"]
        lines.append(f"  ceilings: copy {r['ceilings']['copy_bandwidth_gb_s']} GB/s, bf16 matmul "
                     f"{r['ceilings']['bf16_matmul_tflops']} TFLOP/s; batch-1 bound {bound['actions_per_s_measured_bandwidth']} "
                     f"actions/s (datasheet bandwidth: {bound['actions_per_s_datasheet_bandwidth']})")  # fmt: skip
    for batch, res in r["results"].items():
        if "chunk_shape" in res:
            lines.append(f"  {batch}: predict_chunks {res['median_ms']} ms, {res['chunks_per_s']} chunks/s, "
                         f"{res['actions_per_s']} actions/s, chunk {res['chunk_shape']}")  # fmt: skip
            continue
        modes = [m for m in ("generate", "eager", "static", "graphs") if m in res]
        cells = ", ".join(f"{m} {res[m]['median_ms']} ms = {res[m]['actions_per_s']}/s" for m in modes)
        same = "identical tokens" if all(res["identical_tokens"].values()) else f"token agreement {res['token_agreement']}"
        lines.append(f"  {batch}: {cells}; {same}")
        if "speedup_vs_generate" in res:
            lines.append(f"      speedup vs generate: {res['speedup_vs_generate']}")
        if res.get("graphs_capture_error"):
            lines.append(f"      CUDA graph capture failed: {res['graphs_capture_error']}")
        elif "graphs_first_call_ms" in res:
            lines.append(f"      first graphs call (capture) {res['graphs_first_call_ms']} ms")
    if "ceilings" in r and "graphs" in r["results"].get("b1", {}):
        reached = r["results"]["b1"]["graphs"]["actions_per_s"] / r["bandwidth_bound_b1"]["actions_per_s_measured_bandwidth"]
        lines.append(f"  batch 1 graphs: {reached:.0%} of the measured-bandwidth bound (target >= 70%, >= 35/s on an H200)")
    if "peak_gpu_memory_gib" in r:
        lines.append(f"  peak GPU memory {r['peak_gpu_memory_gib']} GiB")
    return lines


def heads(name: str, r: dict) -> list[str]:
    lines = [f"{name}: {r['machine'].get('gpu', r['device'])}, {r['model']} {r['dtype']}, cameras {r['cameras']}, "
             f"proprio {r['proprio_dim']}, parallel heads' chunks of {r['chunk_len']}"]  # fmt: skip
    for batch, res in r.get("results", {}).items():
        cells = ", ".join(f"{h} {res[h]['median_ms']} ms = {res[h]['actions_per_s']}/s"
                          for h in ("bins", "l1-regression", "bins-parallel") if h in res)  # fmt: skip
        lines.append(f"  {batch}: {cells}; vs bins: {res['ratio_vs_bins']}")
        oft = res.get("l1-regression", {}).get("actions_per_s")
        if oft is not None and batch == "b1":
            lines.append(f"      l1-regression batch 1: {oft} actions/s (OpenVLA-OFT: ~109 on an A100; aim >= 150 on an H100/H200)")
    return lines


def train(name: str, r: dict) -> list[str]:
    job = f"LoRA r={r['lora_rank']}" + (f" on a {r['lora_quant']} base" if r["lora_quant"] else "") if r["lora_rank"] else "full training"
    lines = [f"{name}: {r['machine'].get('gpu', r['device'])}, {r['params_m']}M params "
             f"({r['trainable_params_m']}M trainable), batch {r['batch']} x {r['llm_sequence']} tokens, {job}, "
             f"fsdp={r['fsdp']}, act-ckpt={r['activation_checkpointing']}"]  # fmt: skip
    for variant in ("ours", "baseline"):
        if variant not in r["results"]:
            continue
        v = r["results"][variant]
        cells = [f"{v['median_step_s']} s/step", f"{v['steps_per_s']} steps/s", f"{v['llm_tokens_per_s']} tokens/s"]
        if "peak_gpu_memory_gib" in v:
            cells.append(f"peak {v['peak_gpu_memory_gib']} GiB")
        if v.get("mfu_datasheet") is not None or "mfu_measured_ceiling" in v:
            cells.append(f"{v.get('model_tflops')} TFLOP/s = MFU {v.get('mfu_datasheet')} (datasheet) / "
                         f"{v.get('mfu_measured_ceiling')} (measured matmul)")  # fmt: skip
        lines.append(f"  {variant}: " + ", ".join(cells))
    return lines


def main() -> None:
    res = Path(sys.argv[1])
    out = []
    status = res / "status.jsonl"
    if status.is_file():
        for line in status.read_text().splitlines():
            s = json.loads(line)
            out.append(f"{s['part']:<20} {s['status']} ({s['seconds']} s)")
    for path in sorted(res.glob("*.json")):
        r = json.loads(path.read_text())
        out += {"inference": inference, "heads": heads}.get(r.get("benchmark"), train)(path.stem, r)
    print("\n".join(out))


if __name__ == "__main__":
    main()
