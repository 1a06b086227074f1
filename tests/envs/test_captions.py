"""The toy VLM's tabletop captions and questions: answers agree with the image, splits are disjoint,
the files are LLaVA-v1.5 conversations written deterministically and atomically, every word is a
piece of the committed word tokenizer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from prismatic.envs import captions
from prismatic.envs.captions import (
    QUESTION_TYPES,
    SPLIT_SEEDS,
    CaptionDataConfig,
    all_questions,
    caption,
    cell,
    read_manifest,
    scene_questions,
    scenes,
    split_seeds,
    write_dataset,
)
from prismatic.envs.tabletop import COLORS, OBJECT_HEIGHT, TabletopEnv
from prismatic.envs.vocabulary import TOKENIZER_DIR

SMALL = CaptionDataConfig(num_train=12, num_heldout=5, image_size=48, turns=4)


def _obj(color: str, shape: str, x: float, y: float) -> dict:
    return {"name": f"{color} {shape}", "color": color, "shape": shape, "position": [x, y]}


def test_cells_and_their_margins():
    assert cell((0.0, 0.0)) == "centre"
    assert cell((-0.2, 0.2)) == "back left" and cell((0.2, -0.2)) == "front right"
    assert cell((0.2, 0.0)) == "right" and cell((0.0, -0.2)) == "front"
    border = captions.CELL_BORDER
    assert cell((border + captions.MARGIN * 0.9, 0.0)) is None  # too close to a border to ask
    assert cell((border + captions.MARGIN * 1.1, 0.0)) == "right"
    assert cell((0.0, -border + captions.MARGIN * 1.1)) == "centre"


def test_captions_list_objects_left_to_right():
    objs = [
        _obj("red", "block", 0.1, 0.0),
        _obj("blue", "triangle", -0.2, 0.1),
        _obj("green", "cylinder", 0.0, -0.2),
    ]
    assert caption(objs) == "a blue triangle, a green cylinder and a red block"
    assert caption(objs[:2]) == "a blue triangle and a red block" and caption(objs[:1]) == "a red block"


def test_relations_are_asked_only_when_unambiguous():
    objs = [
        _obj("red", "block", 0.0, 0.0),
        _obj("blue", "triangle", -0.15, 0.12),
        _obj("green", "cylinder", 0.15, 0.13),
    ]
    qas = {
        q.question: q.answer for q in scene_questions({"objects": objs}, (0.2, -0.2)) if q.type == "relation"
    }
    # behind the block: two objects; right of the triangle / left of the cylinder: two; in front of / behind the
    # triangle and the cylinder: they are level (1 cm apart); left of the triangle / right of the cylinder: none
    assert qas == {"What colour is the object left of the block?": "blue",
                   "What colour is the object right of the block?": "green"}  # fmt: skip
    objs[2]["position"][1] = 0.2
    qas = {
        q.question: q.answer for q in scene_questions({"objects": objs}, (0.2, -0.2)) if q.type == "relation"
    }
    assert qas["What colour is the object behind the triangle?"] == "green"  # 8 cm behind it now
    assert qas["What colour is the object in front of the triangle?"] == "red"
    assert "What colour is the object in front of the cylinder?" not in qas  # two in front of it


def test_where_answers_agree_with_the_image():
    """Left and front are the camera's: an object said to be left shows left of one said to be right, and
    front lower in the image than back (the colour's pixels on the object's top face)."""
    env = TabletopEnv(image_size=96)
    checked = 0
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        where = {q.question: q.answer for q in scene_questions(info, obs["state"][:2]) if q.type == "where"}
        pixels = {}
        for o in info["objects"]:
            col, row = env.project(np.array([*o["position"], OBJECT_HEIGHT]))
            rgb = obs["image"][int(row), int(col)].astype(float)
            assert min(COLORS, key=lambda c: np.sum((np.asarray(COLORS[c]) - rgb) ** 2)) == o["color"]
            answer = where.get(f"Where is the {o['name']}?")
            if answer is not None:
                pixels[answer] = pixels.get(answer, []) + [(col, row)]
        for a, pa in pixels.items():
            for b, pb in pixels.items():
                for (ca, ra), (cb, rb) in ((p, q) for p in pa for q in pb):
                    if "left" in a and "right" in b:
                        assert ca < cb
                        checked += 1
                    if "front" in a and "back" in b:
                        assert ra > rb
                        checked += 1
    assert checked > 40


def test_every_scene_asks_every_type_somewhere_and_answers_are_the_scenes():
    seen = set()
    for s in scenes("train", 30, image_size=32):
        names = {q.answer for q in s.questions if q.type == "colour"}
        assert len(names) == 3  # one colour per shape, all different
        assert [q.type for q in s.questions][:7] == ["caption"] + ["colour"] * 3 + ["shape"] * 3
        assert len({q.question for q in s.questions}) == len(s.questions)  # no question twice
        assert all(
            q.question in all_questions() and all_questions()[q.question] == q.type for q in s.questions
        )
        seen |= {q.type for q in s.questions}
    assert seen == set(QUESTION_TYPES)


def test_splits_are_disjoint_from_each_other_and_from_the_demo():
    train, heldout = split_seeds("train", captions.SPLIT_SIZE), split_seeds("heldout", captions.SPLIT_SIZE)
    assert not set(range(train.start, train.stop)) & set(range(heldout.start, heldout.stop))
    demo_train, demo_eval = (
        range(0, 100_000),
        range(100_000, 200_000),
    )  # tabletop_demo.py: seeds 0.. and 100,000..
    for split in (train, heldout):
        assert split.start >= demo_eval.stop or split.stop <= demo_train.start
    with pytest.raises(ValueError, match="split must be one of train, heldout"):
        split_seeds("test", 1)
    with pytest.raises(ValueError, match=r"number of train scenes must be an integer in \[0, 1000000\]"):
        split_seeds("train", captions.SPLIT_SIZE + 1)
    assert SPLIT_SEEDS["heldout"] - SPLIT_SEEDS["train"] >= captions.SPLIT_SIZE


def test_every_question_and_answer_is_whole_words_of_the_word_tokenizer():
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    texts = set(all_questions())
    for s in scenes("train", 40, image_size=32):
        texts |= {q.answer for q in s.questions}
    for text in texts:
        pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False).input_ids)
        assert pieces == ["▁" + w if w[0].isalpha() else w for w in re.findall(r"[a-z]+|[,?]", text, re.I)], (
            text
        )


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("captions") / "data", SMALL, progress_bar=False)


def test_files_are_llava_conversations(written):
    for name in ("align.json", "finetune.json", "heldout.json"):
        entries = json.loads((written / name).read_text())
        assert len({e["id"] for e in entries}) == len(entries)
        for e in entries:
            assert (written / "images" / e["image"]).is_file()
            turns = e["conversations"]
            assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) and turns
            assert turns[0]["value"].startswith("<image>\n")
            assert all("<image>" not in t["value"] for t in turns[1:])
    align = json.loads((written / "align.json").read_text())
    assert len(align) == SMALL.num_train and all(
        e["conversations"][0]["value"] == "<image>\nWhat is on the table?" for e in align
    )
    heldout = json.loads((written / "heldout.json").read_text())
    assert all(len(e["conversations"]) == 2 and e["type"] in QUESTION_TYPES for e in heldout)
    assert {e["image"].split("/")[0] for e in heldout} == {"heldout"} and {
        e["image"].split("/")[0] for e in align
    } == {"train"}


def test_finetune_asks_every_training_question_once(written):
    entries = json.loads((written / "finetune.json").read_text())
    asked = {}
    for e in entries:
        assert len(e["conversations"]) <= 2 * SMALL.turns
        for human, gpt in zip(e["conversations"][0::2], e["conversations"][1::2]):
            key = (e["image"], human["value"].removeprefix("<image>\n"))
            assert key not in asked
            asked[key] = gpt["value"]
    expected = {
        (f"train/{s.seed}.png", q.question): q.answer
        for s in scenes("train", SMALL.num_train, 48)
        for q in s.questions
    }
    assert asked == expected
    manifest = read_manifest(written)
    assert manifest["num_train"] == SMALL.num_train and sum(manifest["questions"]["train"].values()) == len(
        expected
    )


def test_same_config_writes_identical_files(written, tmp_path):
    again = write_dataset(tmp_path / "again", SMALL, progress_bar=False)
    files = sorted(p.relative_to(written) for p in written.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((written / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_bad_settings_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError) as e:
        write_dataset(
            tmp_path / "d", CaptionDataConfig(num_train=0, image_size=8, turns=True), progress_bar=False
        )
    for flag in (
        "num_train must be an integer in [1,",
        "image_size must be an integer in [32, 1024]",
        "turns",
    ):
        assert flag in str(e.value)
    assert not any(tmp_path.iterdir())


def test_an_interrupted_write_leaves_no_dataset_and_the_next_one_completes(tmp_path, monkeypatch):
    out = tmp_path / "d"
    real = captions.conversation

    def fail_late(entry_id, image, qas):
        if image.startswith("heldout/"):
            raise KeyboardInterrupt
        return real(entry_id, image, qas)

    monkeypatch.setattr(captions, "conversation", fail_late)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(out, SMALL, progress_bar=False)
    assert read_manifest(out) is None and not out.exists()
    monkeypatch.setattr(captions, "conversation", real)
    write_dataset(out, SMALL, progress_bar=False)
    assert read_manifest(out)["version"] == captions.VERSION
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # the partial directory is gone
