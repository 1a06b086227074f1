"""The conversation encoder: labels cover exactly the assistant turns in every LLM's prompt format, the align
stage's caption samples, truncation, generation prompts equal to the training prefix, and entry checks."""

from __future__ import annotations

import re

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from prismatic.constants import IGNORE_INDEX
from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.llm.loading import BUNDLED_TOKENIZERS, load_tokenizer
from prismatic.vlm.conversation import ConversationEncoder, conversation_problems

CONVERSATION = [
    {"from": "human", "value": "<image>\nWhat is on the table?"},
    {"from": "gpt", "value": "a red cube"},
    {"from": "human", "value": "Where is it?"},
    {"from": "gpt", "value": "on the left"},
]


def _byte_level(specials: list[str], **tokens: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (one piece per byte, as Qwen2.5's and Phi-2's pre-tokenise) with their specials."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **tokens)
    fast.add_special_tokens({"additional_special_tokens": specials})
    return fast


def _tokenizer(llm_id: str):
    if llm_id.startswith("qwen"):  # Qwen2.5: no BOS; <|endoftext|> ends a turn and pads
        return _byte_level(["<|endoftext|>"], eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if llm_id.startswith("phi"):  # Phi-2: <|endoftext|> is BOS and EOS; <|pad|> is added
        tok = _byte_level(["<|endoftext|>"], bos_token="<|endoftext|>", eos_token="<|endoftext|>")
        tok.add_special_tokens({"pad_token": "<|pad|>"})
        return tok
    return load_tokenizer(llm_id, BUNDLED_TOKENIZERS / "llama2")  # Llama-2's SentencePiece tokenizer, + <PAD>


# LLM backbone -> the text each answer turn is (answer + the format's end of turn)
FORMATS = {
    "llama2-7b-pure": ["a red cube</s>", "on the left</s>"],  # In: ...\nOut: ...
    "llama2-7b-chat": ["a red cube</s>", "on the left</s>"],  # [INST] <<SYS>> ... [/INST] ...
    "vicuna-v15-7b": ["a red cube</s>", "on the left</s>"],  # SYSTEM USER: ... ASSISTANT: ...
    "qwen2.5-0.5b-pure": ["a red cube<|endoftext|>", "on the left<|endoftext|>"],
    "phi-2-3b": ["a red cube\n<|endoftext|>", "on the left\n<|endoftext|>"],
}


def _labelled_spans(labels: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("llm_id", list(FORMATS))
def test_labels_cover_exactly_the_assistant_turns(llm_id):
    tok = _tokenizer(llm_id)
    encoder = ConversationEncoder(tok, LLM_BACKBONES.get(llm_id).prompt_builder)
    ids, labels = encoder.encode(CONVERSATION, "conversation", has_image=True)
    assert len(ids) == len(labels)
    spans = _labelled_spans(labels)
    # one labelled span per assistant turn, holding exactly that turn's tokens (answer + end of turn)
    assert [tok.decode(ids[a:b]) for a, b in spans] == FORMATS[llm_id]
    assert all(labels[i] == ids[i] for a, b in spans for i in range(a, b))
    # the human turns (with the system prompt and role tags) are all ignored, and they are all there
    unlabelled = tok.decode([t for t, lab in zip(ids, labels) if lab == IGNORE_INDEX])
    assert "What is on the table?" in unlabelled and "Where is it?" in unlabelled and "<image>" not in unlabelled
    assert "cube" not in unlabelled and "left" not in unlabelled
    if llm_id == "vicuna-v15-7b":
        assert unlabelled.startswith("<s> A chat between a curious user") and " USER: What is on" in unlabelled
    if llm_id == "llama2-7b-chat":
        assert "<<SYS>" in unlabelled and "[/INST]" in unlabelled


@pytest.mark.parametrize("llm_id", list(FORMATS))
def test_generation_prompts_are_the_training_prefix(llm_id):
    """What generation feeds the model for turn k is exactly what training fed it before turn k's answer."""
    tok = _tokenizer(llm_id)
    encoder = ConversationEncoder(tok, LLM_BACKBONES.get(llm_id).prompt_builder)
    ids, _ = encoder.encode(CONVERSATION, "conversation")
    first = encoder.prompt_ids("What is on the table?")
    second = encoder.prompt_ids("Where is it?", history=[("What is on the table?", "a red cube")])
    assert ids[: len(first)] == first and ids[: len(second)] == second
    assert len(first) < len(second) < len(ids)
    strip = llm_id != "phi-2-3b"  # SentencePiece formats end the prompt without the trailing space (no lone "▁")
    assert tok.decode(first).endswith(encoder.prompt_text("What is on the table?").rstrip() if strip else " ")


def test_bos_is_added_once_and_never_labelled():
    tok = _tokenizer("llama2-7b-pure")
    ids, labels = ConversationEncoder(tok, "pure").encode(CONVERSATION, "conversation", has_image=True)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1 and labels[0] == IGNORE_INDEX


def test_caption_samples_drop_the_prompt_and_label_caption_and_eos():
    tok = _tokenizer("llama2-7b-pure")
    encoder = ConversationEncoder(tok, "pure")
    pair = [{"from": "human", "value": "Describe the photo.\n<image>"}, {"from": "gpt", "value": " a red cube "}]
    ids, labels = encoder.encode(pair, "caption")
    caption = tok("a red cube</s>", add_special_tokens=False).input_ids
    assert ids == [tok.bos_token_id, *caption] and caption[-1] == tok.eos_token_id
    assert labels == [IGNORE_INDEX, *caption]
    assert encoder.prompt_ids(None) == [tok.bos_token_id]  # captioning at inference: BOS + image, as trained


def test_sequences_are_cut_to_the_llms_max_length():
    tok = _tokenizer("llama2-7b-pure")
    full, _ = ConversationEncoder(tok, "pure").encode(CONVERSATION, "conversation")
    ids, labels = ConversationEncoder(tok, "pure", max_length=7).encode(CONVERSATION, "conversation")
    assert ids == full[:7] and len(labels) == 7


def test_a_tokenizer_without_bos_cannot_caption_without_a_prompt():
    encoder = ConversationEncoder(_tokenizer("qwen2.5-0.5b-pure"), "qwen-pure")
    with pytest.raises(ValueError, match="adds no BOS"):
        encoder.prompt_ids(None)


@pytest.mark.parametrize(
    "entry, fmt, message",
    [
        ([], "conversation", "is a list, not an object"),
        ({"image": "a.png"}, "conversation", "has no 'conversations' list"),
        ({"conversations": [{"from": "gpt", "value": "hi"}]}, "conversation", "turn 0 is from 'gpt', expected 'human'"),
        ({"conversations": [{"from": "human", "value": "hi"}]}, "conversation", r"no assistant \('gpt'\) turn"),
        ({"conversations": [{"from": "human", "value": 3}]}, "conversation", "turn 0 must be"),
        ({"image": "", "conversations": CONVERSATION}, "conversation", "'image' must be a path"),
        ({"image": "a.png", "conversations": CONVERSATION}, "caption", "has 4 turns; the align stage reads caption pairs"),
        ({"conversations": CONVERSATION[:2]}, "caption", "has no 'image'"),
        ({"image": "a.png", "conversations": [CONVERSATION[0], {"from": "gpt", "value": "x <image>"}]}, "caption",
         "contains '<image>'"),
    ],
)  # fmt: skip
def test_bad_entries_are_named(entry, fmt, message):
    problems = conversation_problems(entry, fmt)
    assert any(re.search(message, p) for p in problems), problems


def test_good_entries_have_no_problems():
    assert conversation_problems({"image": "a.png", "conversations": CONVERSATION}, "conversation") == []
    assert conversation_problems({"conversations": CONVERSATION}, "conversation") == []  # text-only
    assert conversation_problems({"image": "a.png", "conversations": CONVERSATION[:2]}, "caption") == []
