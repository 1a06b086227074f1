"""Does the demo's tiny VLA learn to follow the tabletop instruction? A single-frame grounding probe.

    .venv/bin/python scripts/probe_tabletop_grounding.py --steps 10000 --eval-every 500 --out runs/probe/grounding.json
    .venv/bin/python scripts/probe_tabletop_grounding.py --steps 2000 --target-colour red --out runs/probe/red.json

What it measures and every flag: prismatic/envs/grounding_probe.py (results in docs/tabletop.md).
"""

from prismatic.envs.grounding_probe import main
from prismatic.util.cli import run_cli

if __name__ == "__main__":
    run_cli(main)
