"""Benchmark the RLDS pipeline on CPU: frames/s and peak host RSS for a two-dataset mixture at 224 px.

Generates its own synthetic data (bridge_orig + libero_spatial_no_noops schemas, real 256 px images) in
a temp dir, then runs each variant in a fresh subprocess (so peak RSS is per variant):
  - `aug`: the training pipeline with OpenVLA's augmentation (the main number);
  - `no_aug`: the same without augmentation (baseline for the cost of augmenting);
  - `decode_before_shuffle`: the same as `no_aug` but with images decoded+resized *before* the shuffle
    buffer (baseline for the memory saved by shuffling encoded frames).

    python scripts/bench_data.py [--out bench_results/data.json] [--frames 400] [--shuffle-buffer 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIX = [("bridge_orig", 1.0), ("libero_spatial_no_noops", 1.0)]
VARIANTS = ("aug", "no_aug", "decode_before_shuffle")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> dict:
    import prismatic  # noqa: F401  (torch before TF: the other import order crashes in this stack)
    from prismatic.data.augment import AugmentConfig
    from prismatic.data.pipeline import PipelineConfig, make_dataset

    variant = args.worker
    decode_first = variant == "decode_before_shuffle"
    cfg = PipelineConfig(
        resize_size=(224, 224),
        image_augment=AugmentConfig() if variant == "aug" else None,
        # decode_before_shuffle: no shuffle inside the pipeline; the same-sized buffer is added after decoding
        shuffle_buffer_size=1 if decode_first else args.shuffle_buffer,
        frame_threads=args.threads,
        traj_transform_threads=2,
        traj_read_threads=2,
        ram_budget_gb=args.ram_budget_gb,
        seed=0,
    )
    t0 = time.perf_counter()
    stream = make_dataset(args.root, MIX, cfg)
    ds = stream.dataset
    if decode_first:
        ds = ds.shuffle(args.shuffle_buffer, seed=0)
    build_s = time.perf_counter() - t0
    rss_before = current_rss_mib()
    rss_max = rss_before
    it = ds.as_numpy_iterator()
    t0 = time.perf_counter()
    for i in range(args.warmup):  # fills the shuffle buffer
        next(it)
        if i % 25 == 0:
            rss_max = max(rss_max, current_rss_mib())
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.frames):
        frame = next(it)
    elapsed = time.perf_counter() - t0
    rss_max = max(rss_max, current_rss_mib())
    assert frame["observation"]["image_primary"].shape[-3:] == (224, 224, 3)
    return {
        "variant": variant,
        "frames": args.frames,
        "frames_per_s": args.frames / elapsed,
        "build_s": build_s,
        "warmup_s": warmup_s,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_iteration_mib": rss_before,
        # RSS added while streaming (shuffle buffer, prefetch), sampled; excludes imports and statistics.
        "rss_growth_mib": rss_max - rss_before,
    }


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("tensorflow", "tensorflow_datasets", "torch", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as e:  # a missing library is reported, not fatal
            out[mod] = f"unavailable ({type(e).__name__})"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_results/data.json")
    p.add_argument("--frames", type=int, default=400, help="frames timed per variant (after warm-up)")
    p.add_argument(
        "--warmup", type=int, default=None, help="frames before timing (default: the shuffle buffer size)"
    )
    p.add_argument("--shuffle-buffer", type=int, default=2000)
    p.add_argument("--episodes", type=int, default=16, help="episodes per dataset")
    p.add_argument("--episode-len", type=int, default=30)
    p.add_argument("--threads", type=int, default=2, help="frame transform threads")
    p.add_argument("--ram-budget-gb", type=float, default=1.0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.warmup is None:
        args.warmup = args.shuffle_buffer

    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        import prismatic  # noqa: F401
        from prismatic.data.synthetic import write_synthetic

        t0 = time.perf_counter()
        for name, _ in MIX:
            write_synthetic(tmp, name, num_episodes=args.episodes, episode_len=args.episode_len, seed=1)
        gen_s = time.perf_counter() - t0
        data_mib = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 2**20
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--worker", variant, "--root", tmp]
            for flag in ("frames", "warmup", "shuffle_buffer", "threads", "ram_budget_gb"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"variant {variant} failed (exit {proc.returncode})")
            results[variant] = json.loads(line[len("RESULT ") :])
            print(json.dumps(results[variant]), flush=True)

    ratios = {}
    if "decode_before_shuffle" in results and "no_aug" in results:
        # Growth while iterating (the shuffle buffer etc.), without the ~1.5 GiB of imported libraries.
        ratios["rss_growth_encoded_shuffle_over_decoded_shuffle"] = results["no_aug"]["rss_growth_mib"] / max(
            results["decode_before_shuffle"]["rss_growth_mib"], 1e-9
        )
    if "aug" in results and "no_aug" in results:
        ratios["fps_aug_over_no_aug"] = results["aug"]["frames_per_s"] / results["no_aug"]["frames_per_s"]
    if "decode_before_shuffle" in results and "no_aug" in results:
        ratios["peak_rss_encoded_shuffle_over_decoded_shuffle"] = (
            results["no_aug"]["peak_rss_mib"] / results["decode_before_shuffle"]["peak_rss_mib"]
        )
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "mem_total_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        },
        "versions": versions(),
        "setup": {
            "mixture": MIX,
            "resolution": 224,
            "shuffle_buffer": args.shuffle_buffer,
            "episodes_per_dataset": args.episodes,
            "episode_len": args.episode_len,
            "synthetic_data_mib": data_mib,
            "data_generation_s": gen_s,
        },
        "results": results,
        "ratios": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(out.suffix + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=2))
    os.replace(tmp_out, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
