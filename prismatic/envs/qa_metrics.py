"""Scoring a VLM's answers to the tabletop questions (`prismatic.envs.captions`): exact match per
question type, against baselines that show what a number means.

  * Answers are compared after `normalize_answer` (lower case, no punctuation, no articles, British
    spelling of "colour" / "centre"), VQA-style: "The red." matches "red".
  * A caption is correct when it names exactly the scene's objects (`caption_objects`, in any order:
    the training captions go left to right, but two objects can be nearly level) and nothing else;
    `caption_objects` also gives the fraction of the scene's objects a caption names.
  * Baselines, fitted on the training questions and scored on the same held-out ones:
    `majority` answers every question of a type with that type's most frequent training answer;
    `question_prior` answers each question with the most frequent training answer *to that question*
    (the best a model that never looks at the image can learn from the data), falling back to the
    type's majority for a question never seen in training.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prismatic.envs.tabletop import COLORS, SHAPES

_ARTICLES = {"a", "an", "the"}
_SPELLING = {"color": "colour", "colors": "colours", "center": "centre"}
_NON_WORD = re.compile(r"[^a-z0-9 ]+")


def normalize_answer(text: str) -> str:
    """Lower case; punctuation -> space; articles dropped; "color" / "center" spelt "colour" / "centre"."""
    words = _NON_WORD.sub(" ", text.lower()).split()
    return " ".join(_SPELLING.get(w, w) for w in words if w not in _ARTICLES)


def caption_objects(text: str) -> tuple[list[str], bool]:
    """The "colour shape" names a caption lists, in order, and whether it says nothing else (only "and")."""
    words = normalize_answer(text).split()
    names, clean, i = [], True, 0
    while i < len(words):
        if words[i] in COLORS and i + 1 < len(words) and words[i + 1] in SHAPES:
            names.append(f"{words[i]} {words[i + 1]}")
            i += 2
            continue
        clean = clean and words[i] == "and"
        i += 1
    return names, clean


def is_correct(qtype: str, prediction: str, answer: str) -> bool:
    """Whether `prediction` answers a question of type `qtype` whose reference answer is `answer`."""
    if qtype == "caption":
        got, clean = caption_objects(prediction)
        want, _ = caption_objects(answer)
        return clean and Counter(got) == Counter(want)
    return normalize_answer(prediction) == normalize_answer(answer)


def _caption_recall(prediction: str, answer: str) -> float:
    want = Counter(caption_objects(answer)[0])
    return sum((Counter(caption_objects(prediction)[0]) & want).values()) / max(1, sum(want.values()))


def score(records: Iterable[Mapping[str, str]]) -> dict[str, Any]:
    """Accuracy overall and per type of records {"type", "prediction", "answer"}; types in first-seen order.
    Caption records also give "caption_objects": the mean fraction of the scene's objects a caption names."""
    hits: dict[str, list[bool]] = defaultdict(list)
    recall: list[float] = []
    for r in records:
        hits[r["type"]].append(is_correct(r["type"], r["prediction"], r["answer"]))
        if r["type"] == "caption":
            recall.append(_caption_recall(r["prediction"], r["answer"]))
    if not hits:
        raise ValueError("score() needs at least one record")
    every = [h for v in hits.values() for h in v]
    out: dict[str, Any] = {
        "accuracy": sum(every) / len(every),
        "questions": len(every),
        "per_type": {t: {"accuracy": sum(v) / len(v), "questions": len(v)} for t, v in hits.items()},
    }
    if recall:
        out["caption_objects"] = sum(recall) / len(recall)
    return out


class AnswerPrior:
    """Image-blind answers learned from training questions: the most frequent answer per question and per type
    (ties broken by the answer's first appearance, so the result depends only on the data's order)."""

    def __init__(self, train: Iterable[Mapping[str, str]]) -> None:
        by_type: dict[str, Counter] = defaultdict(Counter)
        by_question: dict[str, Counter] = defaultdict(Counter)
        for r in train:
            key = _answer_key(r["type"], r["answer"])
            by_type[r["type"]][key] += 1
            by_question[r["question"]][key] += 1
        if not by_type:
            raise ValueError("AnswerPrior needs at least one training question")
        self._type = {t: c.most_common(1)[0][0] for t, c in by_type.items()}
        self._question = {q: c.most_common(1)[0][0] for q, c in by_question.items()}

    def majority(self, qtype: str) -> str:
        if qtype not in self._type:
            raise KeyError(f"no training question of type {qtype!r}; known: {sorted(self._type)}")
        return self._type[qtype]

    def question_prior(self, qtype: str, question: str) -> str:
        return self._question.get(question, self.majority(qtype))


def _answer_key(qtype: str, answer: str) -> str:
    """Answers that score alike count as one: normalised text, and a caption's objects in sorted order."""
    if qtype == "caption":
        return " and ".join(sorted(caption_objects(answer)[0]))
    return normalize_answer(answer)


def baselines(train: Iterable[Mapping[str, str]], heldout: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """`score` of the majority and question-prior baselines (module docstring) on the held-out questions
    ({"type", "question", "answer"}), fitted on the training ones."""
    prior = AnswerPrior(train)
    return {
        "majority": score({**r, "prediction": prior.majority(r["type"])} for r in heldout),
        "question_prior": score(
            {**r, "prediction": prior.question_prior(r["type"], r["question"])} for r in heldout
        ),
    }


def qa_records(
    entries: Iterable[Mapping[str, Any]], types: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """{"type", "question", "answer", "image"} for every question/answer turn of LLaVA entries. Held-out entries carry
    their "type"; training entries' types are looked up by question text in `types` (`captions.all_questions()`)."""
    out = []
    for e in entries:
        turns = e["conversations"]
        for human, gpt in zip(turns[0::2], turns[1::2]):
            question = human["value"].replace("<image>", "").strip()
            qtype = e.get("type") or (types or {}).get(question)
            if qtype is None:
                raise ValueError(
                    f"entry {e.get('id')!r}: question {question!r} has no type (pass types=prismatic.envs.captions.all_questions())"
                )
            out.append(
                {"type": qtype, "question": question, "answer": gpt["value"], "image": e.get("image", "")}
            )
    return out
