"""Benchmark the tabletop demo's training step: Llama-2 tokenizer vs the demo's word tokenizer.

The demo's tiny VLA (configs/vla/tabletop_demo.yaml: 84 px, batch 16, one CPU thread) spends most of
each step on the 32,064-row embedding and LM head of the Llama-2 vocabulary. Its word tokenizer
(prismatic/assets/tokenizers/tabletop, scripts/make_tabletop_tokenizer.py) has 712 pieces. This
times full optimizer steps (forward, backward, clipping, AdamW) of both models on the same rendered
frames, interleaved round by round so that machine noise hits both alike, and reports the ratio.

    .venv/bin/python scripts/bench_tabletop_step.py --out bench_results/tabletop_step_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import transformers  # noqa: E402

import prismatic  # noqa: E402
from prismatic.envs import grounding_probe as probe  # noqa: E402
from prismatic.training.config import VLAConfig  # noqa: E402
from prismatic.training.optim import build_optimizer  # noqa: E402

VARIANTS = {  # name -> tokenizer dir (None: the bundled Llama-2)
    "llama2_tokenizer": None,
    "word_tokenizer": REPO / "prismatic" / "assets" / "tokenizers" / "tabletop",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the demo trains with 1)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each times --steps steps per variant")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path, default=None, help="results JSON")
    a = p.parse_args(argv)
    for flag in ("batch", "threads", "rounds", "steps"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag} must be at least 1, got {getattr(a, flag)}")
    return a


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    frames = probe.render_frames(a.batch, seed=12345, num_objects=3, target_colour=None)
    setups = {}
    for name, tokenizer in VARIANTS.items():
        vla, image_transform, transform, collator = probe.build_model(0, tokenizer)
        seqs, pixels = probe.encode(frames, image_transform, transform)
        batch = probe.collate(collator, seqs, pixels, list(range(a.batch)))
        model = vla.model.train()
        # the trainer's optimizer (fused AdamW on one device), at the demo's learning rate
        opt = build_optimizer(model, VLAConfig(learning_rate=1e-3))
        params = sum(p.numel() for p in model.parameters())
        setups[name] = (model, opt, batch, params)

    def run(name: str, n: int) -> float:
        model, opt, batch, _ = setups[name]
        t = time.perf_counter()
        for _ in range(n):
            out = model(**batch, return_label_logits=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - t) / n

    for name in setups:  # warm-up
        run(name, 3)
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(a.rounds):
        for name in setups:
            times[name].append(run(name, a.steps))
    results = {
        name: {"step_ms_median": round(1000 * statistics.median(ts), 2), "step_ms_rounds": [round(1000 * t, 2) for t in ts],
               "parameters": setups[name][3], "vocab_rows": setups[name][0].get_input_embeddings().num_embeddings}
        for name, ts in times.items()
    }  # fmt: skip
    base, new = results["llama2_tokenizer"]["step_ms_median"], results["word_tokenizer"]["step_ms_median"]
    report = {
        "command": " ".join(["scripts/bench_tabletop_step.py", *(argv if argv is not None else sys.argv[1:])]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_threads": a.threads},
        "versions": {"prismatic": prismatic.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},  # fmt: skip
        "results": results,
        "speedup_word_vs_llama2": round(base / new, 2),
    }
    for name, r in results.items():
        print(f"{name:18s} {r['step_ms_median']:7.1f} ms/step  {r['parameters'] / 1e6:.2f} M parameters")
    print(f"word tokenizer: {report['speedup_word_vs_llama2']:.2f}x faster per step")
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
