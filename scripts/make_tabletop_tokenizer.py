"""Write the tabletop demo's word tokenizer to prismatic/assets/tokenizers/tabletop/.

    .venv/bin/python scripts/make_tabletop_tokenizer.py [--out DIR]

Its pieces are the words of the OpenVLA prompt and of every tabletop instruction (plus characters and
bytes for any other text), and its base vocabulary ends with 256 reserved pieces for the action bins:
712 pieces instead of Llama-2's 32,000, which makes the demo's tiny VLA train ~2.5x faster per step
on a CPU (scripts/bench_tabletop_step.py). tests/models/test_word_tokenizer.py checks that the
committed files are what this script writes.
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prismatic.envs.tabletop import all_instructions  # noqa: E402
from prismatic.models.llm.prompting import VLA_QUESTION  # noqa: E402
from prismatic.models.llm.word_tokenizer import save_word_tokenizer, split_words  # noqa: E402

DEFAULT_OUT = REPO / "prismatic" / "assets" / "tokenizers" / "tabletop"


def tabletop_words() -> list[str]:
    return split_words(["In: " + VLA_QUESTION + "\nOut:", *all_instructions()])


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    out = save_word_tokenizer(tabletop_words(), a.out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
