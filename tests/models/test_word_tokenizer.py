"""The small word tokenizer of the tabletop demo: committed files, Llama-2 conventions, reserved action ids."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from prismatic.envs.tabletop import all_instructions
from prismatic.envs.vocabulary import TOKENIZER_DIR as ASSET
from prismatic.envs.vocabulary import write_tokenizer
from prismatic.models.llm.word_tokenizer import build_word_tokenizer, split_words
from prismatic.training.config import TrainConfig, VLAConfig
from prismatic.training.model_setup import build_model_and_processor, sample_transform

REPO = Path(__file__).resolve().parents[2]
PROMPT = "In: What action should the robot take to touch the red cylinder?\nOut:"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(ASSET)


def test_committed_files_are_what_the_script_writes(tmp_path):
    out = write_tokenizer(tmp_path)  # what scripts/make_tabletop_tokenizer.py runs
    assert json.loads((out / "tokenizer.json").read_text()) == json.loads((ASSET / "tokenizer.json").read_text())


def test_prompt_pieces_follow_llama2(tok):
    pieces = tok.convert_ids_to_tokens(tok(PROMPT).input_ids)
    # Llama-2 gives the same pieces except that it splits "cylinder" in two (▁cyl, inder)
    assert pieces == ["<s>", "▁In", ":", "▁What", "▁action", "▁should", "▁the", "▁robot", "▁take", "▁to", "▁touch",
                      "▁the", "▁red", "▁cylinder", "?", "<0x0A>", "Out", ":"]  # fmt: skip
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token) == (1, 2, "<PAD>")
    assert tok.pad_token_id == tok.vocab_size == len(tok) - 1  # <PAD> is added after the base vocabulary


@pytest.mark.parametrize("text", [PROMPT, "pick up the café mug!  then stop", "x<reserved_000>y\t42"])
def test_any_text_round_trips_and_never_hits_the_action_ids(tok, text):
    ids = tok(text).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert max(ids) < tok.vocab_size - 256  # the last 256 base ids are left to the action bins


def test_every_instruction_is_whole_words(tok):
    for text in all_instructions():
        pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False).input_ids)
        assert pieces == ["▁" + w for w in text.split()], text


def test_bad_words_are_rejected():
    with pytest.raises(ValueError, match="ASCII letters/digits"):
        build_word_tokenizer(["▁red", "▁café"])
    assert split_words(["go to the red block?\nOut:", "the RED one"]) == ["▁go", "▁to", "▁the", "▁red", "▁block",
                                                                          "Out", "▁RED", "▁one"]  # fmt: skip


def test_a_model_with_it_trains_and_predicts_without_llama_ids(tok):
    """Action ids are the last 256 base ids; no Llama-2 "▁" (29871) is inserted before them."""
    cfg = TrainConfig(vla=VLAConfig(size="tiny", vision_backbone_id="siglip-vit-so400m", image_size=56,
                                    arch_specifier="no-align+gelu-mlp"), data_root=Path("."), tokenizer=ASSET)  # fmt: skip
    vla = build_model_and_processor(cfg)
    model = vla.model
    assert model.config.empty_token_before_actions is False
    assert model.get_input_embeddings().num_embeddings == 768  # 763 (with <PAD>) padded to a multiple of 64
    assert model.action_tokenizer.vocab_size == tok.vocab_size == 762
    transform, collator = sample_transform(vla)
    image = np.zeros((56, 56, 3), np.uint8)
    ids = transform.encoder.tokens("touch the red block", np.zeros(7))["input_ids"]
    prompt_len = len(tok(PROMPT.replace("cylinder", "block")).input_ids)
    assert len(ids) == prompt_len + 8  # no extra piece between "Out:" and the 7 action ids + EOS
    assert ids[prompt_len:-1].min() >= 762 - 256 and ids[prompt_len:-1].max() < 762
    model.config.norm_stats = {"d": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}}
    inputs = vla.processor(PROMPT, __import__("PIL.Image").Image.fromarray(image))
    with torch.no_grad():
        action = model.predict_action(**inputs, unnorm_key="d")
    assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)


@pytest.mark.slow
def test_step_benchmark_reports_both_vocabularies(tmp_path):
    """scripts/bench_tabletop_step.py run as a user runs it (a script, not imported by path)."""
    cmd = [sys.executable, str(REPO / "scripts" / "bench_tabletop_step.py"), "--rounds", "1", "--steps", "1",
           "--batch", "2", "--out", str(tmp_path / "b.json")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["speedup_word_vs_llama2"] > 0 and "faster per step" in proc.stdout
    rows = {name: r["vocab_rows"] for name, r in saved["results"].items()}
    assert rows == {"llama2_tokenizer": 32064, "word_tokenizer": 768}
    assert saved["results"]["word_tokenizer"]["parameters"] < saved["results"]["llama2_tokenizer"]["parameters"] / 5
    assert {"machine", "versions", "command"} <= set(saved)
