"""The Llama-2 tokenizer through `tokenizers` and through transformers' AutoTokenizer must give the
reference SentencePiece tokenisation of the 46 test vectors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

ASSETS = Path(__file__).resolve().parents[1] / "assets"

VEC = ASSETS / "llama2-tokenizer"


def _vectors() -> list[tuple[str, list[int]]]:
    texts = (VEC / "test-vectors.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    if texts and texts[-1].endswith("\n__ggml_vocab_test__"):
        texts[-1] = texts[-1].removesuffix("\n__ggml_vocab_test__")
    ids = [[int(t) for t in line.split()] for line in (VEC / "test-vectors.out").read_text().splitlines()]
    texts = [t for t in texts if t != "" or True][: len(ids)]
    return list(zip(texts, ids))


def test_vector_count():
    assert len(_vectors()) == 46


def test_raw_tokenizer_reproduces_vectors():
    tok = Tokenizer.from_file(str(VEC / "tokenizer.json"))
    bad = [(t, ids, tok.encode(t, add_special_tokens=False).ids) for t, ids in _vectors()
           if tok.encode(t, add_special_tokens=False).ids != ids]  # fmt: skip
    assert not bad, bad[:3]


def test_checkpoint_tokenizer_through_transformers(tiny_checkpoint):
    from transformers import AutoTokenizer

    import prismatic  # noqa: F401

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert tok.vocab_size == 32000 and tok.pad_token_id == 32000 and tok.bos_token_id == 1
    bad = [(t, ids) for t, ids in _vectors() if tok(t, add_special_tokens=False).input_ids != ids]
    assert not bad, bad[:3]


@pytest.mark.parametrize("text", ["In: What action should the robot take to open the drawer?\nOut:"])
def test_bos_is_prepended(tiny_checkpoint, text):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    ids = tok(text).input_ids
    assert ids[0] == 1 and ids[-2:] == [3744, 29901]
