"""Fixtures of the VLM tests: a small word tokenizer (CPU-fast: ~1k pieces instead of Llama-2's 32k), the
synthetic data, and align / finetune runs of a tiny VLM trained once per session and shared."""

from __future__ import annotations

from pathlib import Path

import pytest
from vlm_helpers import COLOURS, SHAPES, vlm_config, write_data

WORDS = ["Describe", "the", "image", "What", "colour", "is", "object", "shape", "it", "Say", "hello", "a", "In",
         "Out", *COLOURS, *SHAPES]  # fmt: skip


@pytest.fixture(scope="session")
def word_tokenizer(tmp_path_factory) -> Path:
    from prismatic.models.llm.word_tokenizer import save_word_tokenizer, split_words

    texts = [" ".join(WORDS), "In: What colour is the object?\nOut: red</s>"]
    return save_word_tokenizer(split_words(texts) + [w for w in WORDS], tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def vlm_data(tmp_path_factory) -> dict[str, Path]:
    return write_data(tmp_path_factory.mktemp("vlm-data"))


@pytest.fixture(scope="session")
def align_run(tmp_path_factory, vlm_data, word_tokenizer) -> Path:
    from prismatic.vlm.training import train_vlm

    root = tmp_path_factory.mktemp("runs")
    train_vlm(vlm_config("align", vlm_data, root, word_tokenizer, run_id="align", steps=8))
    return root / "align"


@pytest.fixture(scope="session")
def finetune_run(tmp_path_factory, vlm_data, align_run) -> Path:
    from prismatic.vlm.training import train_vlm

    root = tmp_path_factory.mktemp("runs")
    train_vlm(vlm_config("finetune", vlm_data, root, None, run_id="finetune", steps=8, pretrained_checkpoint=align_run))
    return root / "finetune"
