"""Chatting with a trained tiny VLM: generation runs, greedy decoding is deterministic and is the model's
argmax chain, batched rows are their one-by-one answers, history and captioning work, and chat.py answers."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from prismatic.vlm import load_vlm


@pytest.fixture(scope="module")
def vlm(finetune_run):
    return load_vlm(finetune_run)


@pytest.fixture(scope="module")
def image(vlm_data):
    return Image.open(vlm_data["root"] / "images" / "000.png")


def test_greedy_generation_is_deterministic_and_the_argmax_chain(vlm, image):
    answer = vlm.generate(image, "What colour is the object?", max_new_tokens=6)
    assert isinstance(answer, str) and answer == vlm.generate(image, "What colour is the object?", max_new_tokens=6)
    # the same tokens by hand: the encoder's prompt ids, the image, argmax one token at a time (no cache)
    ids = torch.tensor([vlm.encoder.prompt_ids("What colour is the object?")])
    pixels = vlm.image_transform(image)[None]
    out = []
    with torch.no_grad():
        for _ in range(6):
            nxt = int(vlm.model(input_ids=ids, pixel_values=pixels).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == vlm.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert answer == vlm.tokenizer.decode(out, skip_special_tokens=True).strip()


def test_batched_rows_are_their_one_by_one_answers(vlm, vlm_data):
    images = [Image.open(vlm_data["root"] / "images" / f"{i:03d}.png") for i in range(3)]
    prompts = ["What colour is the object?", "Describe the image.", "What shape is it?"]  # different lengths: padding
    batch = vlm.generate_batch(images, prompts, max_new_tokens=5)
    assert batch == [vlm.generate(img, p, max_new_tokens=5) for img, p in zip(images, prompts)]


def test_history_and_captioning(vlm, image, align_run):
    history = [("What colour is the object?", vlm.generate(image, "What colour is the object?", max_new_tokens=4))]
    ids = vlm.encoder.prompt_ids("What shape is it?", history)
    assert len(ids) > len(vlm.encoder.prompt_ids("What shape is it?"))
    assert isinstance(vlm.generate(image, "What shape is it?", history=history, max_new_tokens=4), str)
    align = load_vlm(align_run)
    assert align.stage == "align" and vlm.stage == "finetune"
    caption = align.generate(image, None, max_new_tokens=4)  # the align stage's input: BOS + image
    assert caption == align.generate(image, None, max_new_tokens=4)
    with pytest.raises(ValueError, match="pass one prompt per image"):
        vlm.generate_batch([image, image], ["a"])
    with pytest.raises(ValueError, match="the prompt must be a non-empty string"):
        vlm.generate(image, "  ")


def test_chat_script_answers_one_prompt(finetune_run, vlm_data, vlm, image, monkeypatch, capsys):
    script = str(Path(__file__).resolve().parents[2] / "vla-scripts" / "chat.py")
    argv = ["chat.py", "--checkpoint", str(finetune_run), "--image", str(vlm_data["root"] / "images" / "000.png"),
            "--prompt", "What colour is the object?", "--max_new_tokens", "6", "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code in (0, None)
    assert capsys.readouterr().out.strip() == vlm.generate(image, "What colour is the object?", max_new_tokens=6)
