"""Plot a training run's curves to PNG.

    python vla-scripts/plot_run.py --run_dir runs/<run_id>            # writes runs/<run_id>/curves.png
"""

from dataclasses import dataclass
from pathlib import Path

import draccus

from prismatic.training.plot import plot_run


@dataclass
class PlotConfig:
    run_dir: Path  # a training run directory (with metrics.jsonl)
    out: Path | None = None  # PNG path (default: <run_dir>/curves.png)


@draccus.wrap()
def main(cfg: PlotConfig) -> None:
    print(f"wrote {plot_run(cfg.run_dir, cfg.out)}")


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
