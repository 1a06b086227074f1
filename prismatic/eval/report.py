"""Human-readable outputs of an evaluation: a markdown / plain table and a per-task bar chart PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from prismatic.eval.stats import SuccessStats

TableFormat = Literal["markdown", "plain"]


def _rows(per_task: Sequence[SuccessStats], overall: SuccessStats) -> list[list[str]]:
    rows = []
    for s in [*per_task, overall]:
        lo, hi = s.ci95
        rows.append(
            [
                s.name,
                f"{s.successes}/{s.episodes}",
                f"{100 * s.rate:.1f}",
                f"[{100 * lo:.1f}, {100 * hi:.1f}]",
            ]
        )
    return rows


def format_table(summary: tuple[Sequence[SuccessStats], SuccessStats], fmt: TableFormat = "markdown") -> str:
    """Per-task success (%, Wilson 95% CI in %) and the overall line, from `EvalResults.summary()`."""
    per_task, overall = summary
    header = ["task", "successes", "success %", "95% CI %"]
    rows = _rows(per_task, overall)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    if fmt == "markdown":
        line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
        sep = "|" + "|".join(("-" * (w + 1)) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
        return "\n".join([line(header), sep, *map(line, rows)])
    if fmt == "plain":
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        rule = "-" * len(line(header))
        return "\n".join([line(header), rule, *map(line, rows[:-1]), rule, line(rows[-1])])
    raise ValueError(f"unknown table format {fmt!r}; choose one of: markdown, plain")


def plot_success_bars(
    summary: tuple[Sequence[SuccessStats], SuccessStats], path: str | Path, title: str = ""
) -> Path:
    """Horizontal bars of per-task success with Wilson 95% CI whiskers and the overall rate as a line."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: never needs a display
    import matplotlib.pyplot as plt

    per_task, overall = summary
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in per_task]
    rates = [100 * s.rate for s in per_task]
    err = [[100 * (s.rate - s.ci95[0]) for s in per_task], [100 * (s.ci95[1] - s.rate) for s in per_task]]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * max(1, len(per_task))))
    try:
        y = range(len(per_task))
        ax.barh(list(y), rates, xerr=err, color="#4C72B0", ecolor="#333333", capsize=3)
        ax.axvline(
            100 * overall.rate,
            color="#C44E52",
            linestyle="--",
            label=f"overall {100 * overall.rate:.1f}% ({overall.successes}/{overall.episodes})",
        )
        ax.set_yticks(list(y), [n if len(n) <= 60 else n[:57] + "..." for n in names], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("success rate (%), whiskers: Wilson 95% CI")
        if title:
            ax.set_title(title)
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        from prismatic.util.io import atomic_savefig

        atomic_savefig(fig, path)
    finally:
        plt.close(fig)
    return path
