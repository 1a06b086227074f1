"""The tabletop benchmark's word tokenizer: the words it knows and its committed files.

Its pieces are the words of the OpenVLA prompt, of every tabletop instruction and of every caption, question
and answer of the toy VLM data (`prismatic.envs.captions`, so a VLM trained on it can become the VLA's base),
plus characters and bytes for any other text; its base vocabulary ends with 256 reserved pieces for the
action bins: 762 pieces instead of Llama-2's 32,000, which makes the demo's tiny VLA train ~2.5x faster per step
on a CPU (scripts/bench_tabletop_step.py). `scripts/make_tabletop_tokenizer.py` rewrites the files;
tests/models/test_word_tokenizer.py checks that the committed ones are what `write_tokenizer` writes.
"""

from __future__ import annotations

from pathlib import Path

from prismatic.envs.captions import all_texts
from prismatic.envs.tabletop import all_instructions
from prismatic.models.llm.prompting import VLA_QUESTION
from prismatic.models.llm.word_tokenizer import save_word_tokenizer, split_words

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "assets" / "tokenizers" / "tabletop"


def tabletop_words() -> list[str]:
    return split_words(["In: " + VLA_QUESTION + "\nOut:", *all_instructions(), *all_texts()])


def write_tokenizer(out: str | Path = TOKENIZER_DIR) -> Path:
    return save_word_tokenizer(tabletop_words(), out)
