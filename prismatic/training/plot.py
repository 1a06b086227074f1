"""Plot a run's curves (loss, action accuracy, L1, learning rate, ...) from metrics.jsonl to a PNG."""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_KEYS = ("loss", "action_accuracy", "action_l1", "lr", "grad_norm", "samples_per_s")


def load_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a training run directory?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir: Path, out: Path | None = None, keys: tuple[str, ...] = DEFAULT_KEYS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load_metrics(run_dir)
    keys = tuple(k for k in keys if any(k in r for r in rows))
    if not keys:
        raise ValueError(f"no plottable metrics in {run_dir}/metrics.jsonl")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.5)
        per_dataset = sorted({k for r in rows for k in r if k.startswith(key + "/")})
        for k in per_dataset:
            pts = [(r["step"], r[k]) for r in rows if k in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, alpha=0.7, label=k.split("/", 1)[1])
        if per_dataset:
            ax.legend(fontsize=6)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(Path(run_dir).name, fontsize=9)
    fig.tight_layout()
    out = Path(out) if out else Path(run_dir) / "curves.png"
    from prismatic.util.io import atomic_savefig

    try:
        atomic_savefig(fig, out, dpi=110)
    finally:
        plt.close(fig)
    return out
