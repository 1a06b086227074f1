"""Scoring the toy VLM's answers: normalisation, captions in any order, per-type accuracy, and the
image-blind baselines (fitted on training questions, scored on held-out ones)."""

from __future__ import annotations

import pytest

from prismatic.envs.captions import all_questions, conversation, scenes
from prismatic.envs.qa_metrics import (
    AnswerPrior,
    baselines,
    caption_objects,
    is_correct,
    normalize_answer,
    qa_records,
    score,
)


def test_normalisation():
    assert normalize_answer("  The Red. ") == "red"
    assert normalize_answer("Back-Left!") == "back left"
    assert normalize_answer("in the center") == "in centre" and normalize_answer("Color") == "colour"


@pytest.mark.parametrize(
    ("prediction", "correct"),
    [
        ("a red block, a green cylinder and a blue triangle", True),
        ("a blue triangle, a red block and a green cylinder", True),  # any order
        ("The red block, the green cylinder, and the blue triangle.", True),
        ("a red block and a green cylinder", False),  # one missing
        ("a red block, a green cylinder and a yellow triangle", False),  # one wrong
        ("a red block, a green cylinder, a blue triangle and a red block", False),  # one extra
        ("a red block, a green cylinder and a blue triangle on the left", False),  # says more
        ("", False),
    ],
)
def test_captions_score_their_objects(prediction, correct):
    answer = "a red block, a green cylinder and a blue triangle"
    assert is_correct("caption", prediction, answer) is correct


def test_caption_objects_and_recall():
    assert caption_objects("a red block and a yellow") == (
        ["red block"],
        False,
    )  # "yellow" alone is not an object
    result = score([
        {"type": "caption", "prediction": "a red block and a blue cylinder", "answer": "a red block, a blue triangle"},
        {"type": "caption", "prediction": "a blue triangle and a red block", "answer": "a red block and a blue triangle"},
    ])  # fmt: skip
    assert result["per_type"]["caption"] == {"accuracy": 0.5, "questions": 2}
    assert result["caption_objects"] == pytest.approx(0.75)  # 1/2 and 2/2 of the objects named


def test_score_per_type_and_overall():
    records = [
        {"type": "colour", "prediction": "Red", "answer": "red"},
        {"type": "colour", "prediction": "blue", "answer": "red"},
        {"type": "where", "prediction": "back left", "answer": "back left"},
        {"type": "colour", "prediction": "green", "answer": "green"},
    ]
    result = score(records)
    assert result["accuracy"] == 0.75 and result["questions"] == 4
    assert list(result["per_type"]) == ["colour", "where"]
    assert result["per_type"]["colour"] == {"accuracy": pytest.approx(2 / 3), "questions": 3}
    assert "caption_objects" not in result
    with pytest.raises(ValueError, match="at least one record"):
        score([])


def test_baselines_fit_on_training_and_score_heldout():
    train = [
        {"type": "colour", "question": "What colour is the block?", "answer": "red"},
        {"type": "colour", "question": "What colour is the block?", "answer": "red"},
        {"type": "colour", "question": "What colour is the triangle?", "answer": "blue"},
        {"type": "colour", "question": "What colour is the cylinder?", "answer": "green"},
        {"type": "colour", "question": "What colour is the triangle?", "answer": "Blue."},
        {"type": "colour", "question": "What colour is the triangle?", "answer": "yellow"},
    ]
    prior = AnswerPrior(train)
    assert prior.majority("colour") == "red"  # red 2, blue 2 (normalised), first seen wins the tie
    assert prior.question_prior("colour", "What colour is the triangle?") == "blue"
    assert prior.question_prior("colour", "What colour is the ball?") == "red"  # unseen: the type's majority
    with pytest.raises(KeyError, match=r"no training question of type 'where'; known: \['colour'\]"):
        prior.majority("where")
    heldout = [
        {"type": "colour", "question": "What colour is the triangle?", "answer": "blue"},
        {"type": "colour", "question": "What colour is the cylinder?", "answer": "green"},
        {"type": "colour", "question": "What colour is the block?", "answer": "yellow"},
    ]
    result = baselines(train, heldout)
    assert result["majority"]["accuracy"] == 0.0
    assert result["question_prior"]["accuracy"] == pytest.approx(2 / 3)


def test_no_question_type_can_be_answered_without_the_image():
    """On generated scenes, the best image-blind answers stay far from perfect: each type needs the image."""
    types = all_questions()

    def records(split, n):
        entries = [conversation(str(s.seed), "", s.questions) for s in scenes(split, n, image_size=32)]
        return qa_records(entries, types)

    result = baselines(records("train", 400), records("heldout", 150))
    for name in ("majority", "question_prior"):
        for qtype, r in result[name]["per_type"].items():
            assert r["accuracy"] < (0.1 if qtype == "caption" else 0.45), (name, qtype, r)
    assert set(result["question_prior"]["per_type"]) == {
        "caption",
        "colour",
        "shape",
        "where",
        "relation",
        "gripper",
    }


def test_qa_records_need_a_type():
    entry = conversation("0", "train/0.png", [])
    entry["conversations"] = [
        {"from": "human", "value": "<image>\nWhat is it?"},
        {"from": "gpt", "value": "red"},
    ]
    with pytest.raises(ValueError, match="has no type"):
        qa_records([entry])
    assert qa_records([{**entry, "type": "colour"}]) == [
        {"type": "colour", "question": "What is it?", "answer": "red", "image": "train/0.png"}
    ]
