"""Write the tabletop demo's word tokenizer to prismatic/assets/tokenizers/tabletop/.

    .venv/bin/python scripts/make_tabletop_tokenizer.py [--out DIR]

What it holds and why: prismatic/envs/vocabulary.py.
"""

import argparse
from pathlib import Path

from prismatic.envs.vocabulary import TOKENIZER_DIR, write_tokenizer

if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    def main() -> None:
        p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        p.add_argument("--out", type=Path, default=TOKENIZER_DIR)
        print(f"wrote {write_tokenizer(p.parse_args().out)}")

    run_cli(main)
