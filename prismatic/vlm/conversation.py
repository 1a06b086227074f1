"""LLaVA-style conversations -> token ids and labels, for training and for generation alike.

One encoder lays out a VLM's text, so what generation feeds the model is exactly what training taught it:

- `caption` samples (the align stage, as the original and LLaVA-1.5 do it): the human prompt is dropped and
  the model reads `<BOS> [patches] {caption}{EOS}`; every token but BOS is labelled.
- `conversation` samples (the finetune stages): each turn is wrapped by the LLM's prompt builder
  (`prismatic.models.llm.prompting`: `In: {q}\\nOut: ` for pure, `[INST] ... [/INST]` for Llama-2 chat, ...)
  and tokenised on its own (BOS only on the first turn); human turns are IGNORE, the model's turns (answer +
  EOS) are labels. For SentencePiece tokenizers (Llama-2, Vicuna, Mistral, and our word tokenizers) each
  turn is right-stripped first, as the original did: a trailing space would become a lone "▁" piece that
  generation never produces. Phi-2's byte-level tokenizer keeps it, as the original's did.
- generation: `prompt_ids(message, history)` encodes past turns and the new human turn the same way.

Sequences longer than `max_length` (the LLM's `llm_max_length`) are cut, as in the original (image patches
come on top). The first label is always IGNORE when an image is spliced in after the first token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prismatic.constants import IGNORE_INDEX
from prismatic.data.errors import DataError
from prismatic.models.llm.prompting import PROMPT_BUILDERS, get_prompt_builder

SAMPLE_FORMATS = ("caption", "conversation")
ROLES = ("human", "gpt")
# Prompt builders whose tokenizers keep a trailing space as its own token (byte-level BPE): turns are not stripped.
_KEEP_TRAILING_SPACE = ("phi-2",)


@dataclass
class ConversationEncoder:
    tokenizer: Any
    prompt_builder: str  # key of PROMPT_BUILDERS (the LLM backbone's)
    max_length: int = 2048

    def __post_init__(self) -> None:
        PROMPT_BUILDERS.get(self.prompt_builder)  # raises with the valid choices

    @property
    def strip_turns(self) -> bool:
        return self.prompt_builder not in _KEEP_TRAILING_SPACE

    # -- training samples ----------------------------------------------------------------------------
    def encode(self, conversation: Sequence[dict[str, str]], sample_format: str, has_image: bool = True):
        """(input_ids, labels) as lists of ints for a validated conversation (`conversation_problems`)."""
        if sample_format == "caption":
            ids = self._ids(conversation[-1]["value"].strip() + self.tokenizer.eos_token, first=True)
            labels = list(ids)
            labels[0] = IGNORE_INDEX  # BOS: the image patches go right after it
            return ids[: self.max_length], labels[: self.max_length]
        if sample_format != "conversation":
            raise ValueError(f"sample_format={sample_format!r} is not one of: {', '.join(SAMPLE_FORMATS)}")
        builder, ids, labels = get_prompt_builder(self.prompt_builder), [], []
        for i, turn in enumerate(conversation):
            turn_ids = self._ids(builder.add_turn(turn["from"], turn["value"]), first=i == 0)
            ids += turn_ids
            labels += turn_ids if turn["from"] == "gpt" else [IGNORE_INDEX] * len(turn_ids)
        ids, labels = ids[: self.max_length], labels[: self.max_length]
        if has_image and labels:
            labels[0] = IGNORE_INDEX
        return ids, labels

    # -- generation -------------------------------------------------------------------------------------
    def prompt_ids(self, message: str | None, history: Sequence[tuple[str, str]] = ()) -> list[int]:
        """The ids generation starts from: past (question, answer) turns and the new question, wrapped and
        tokenised as in training. `message=None` (no history): the align stage's captioning input, BOS alone."""
        if message is None:
            if history:
                raise ValueError("captioning (message=None) takes no history: it is the align stage's input, BOS alone")
            ids = self._ids("", first=True)
            if not ids:
                raise ValueError(f"the {self.prompt_builder} tokenizer adds no BOS, so there is nothing to put the image "
                                 "after: pass a prompt")  # fmt: skip
            return ids
        if not isinstance(message, str) or not message.strip():
            raise ValueError(f"the prompt must be a non-empty string, got {message!r}")
        turns = [(role, text) for q, a in history for role, text in (("human", q), ("gpt", a))] + [("human", message)]
        builder, ids = get_prompt_builder(self.prompt_builder), []
        for i, (role, text) in enumerate(turns):
            ids += self._ids(builder.add_turn(role, text), first=i == 0)
        return ids

    def prompt_text(self, message: str, history: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt as text (for display): what `prompt_ids` tokenises, turn by turn."""
        builder = get_prompt_builder(self.prompt_builder)
        for q, a in history:
            builder.add_turn("human", q)
            builder.add_turn("gpt", a)
        return builder.get_potential_prompt(message)

    def _ids(self, text: str, first: bool) -> list[int]:
        if self.strip_turns:
            text = text.rstrip()
        return list(self.tokenizer(text, add_special_tokens=first).input_ids)


def conversation_problems(entry: Any, sample_format: str) -> list[str]:
    """What is wrong with one JSON entry for `sample_format` (empty: it encodes). Checked before training."""
    if not isinstance(entry, dict):
        return [f"is a {type(entry).__name__}, not an object with 'conversations'"]
    problems = []
    image = entry.get("image")
    if "image" in entry and (not isinstance(image, str) or not image.strip()):
        problems.append(f"'image' must be a path relative to --data.image_dir, got {image!r}")
    turns = entry.get("conversations")
    if not isinstance(turns, list) or not turns:
        return problems + ["has no 'conversations' list of turns ({'from': 'human' | 'gpt', 'value': str})"]
    for i, turn in enumerate(turns):
        expected = ROLES[i % 2]
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            problems.append(f"turn {i} must be {{'from': {expected!r}, 'value': <text>}}, got {str(turn)[:80]!r}")
        elif turn.get("from") != expected:
            problems.append(f"turn {i} is from {turn.get('from')!r}, expected {expected!r} (turns alternate human, gpt, "
                            "starting with human)")  # fmt: skip
    if problems:
        return problems
    if not any(turn["from"] == "gpt" for turn in turns):
        problems.append("has no assistant ('gpt') turn: nothing to learn from it")
    if sample_format == "caption":
        if len(turns) != 2:
            problems.append(f"has {len(turns)} turns; the align stage reads caption pairs (one human prompt, one gpt "
                            "caption), as LLaVA's pretraining data")  # fmt: skip
        elif "<image>" in turns[1]["value"]:
            problems.append("the gpt caption contains '<image>' (the image token belongs in the human turn)")
        if "image" not in entry:
            problems.append("has no 'image': the align stage learns captions of images")
    return problems


class ConversationDataError(DataError):
    """Entries of a conversation JSON that cannot be trained on; the message lists them."""
