"""A small Llama-style tokenizer whose pieces are the words of a closed vocabulary.

The Llama-2 tokenizer has 32,000 pieces. For a CPU-sized model trained from scratch on a toy task
(the embedded tabletop benchmark), its embedding, LM head and their optimizer state are ~90% of the
parameters and over half of each training step, for a task whose prompts use ~40 distinct words.
`build_word_tokenizer` makes a tokenizer with the same conventions (SentencePiece-style "▁" word
prefixes, byte fallback, <s> / </s> / <PAD>, BOS added) whose pieces are the given words, every
printable ASCII character and the 256 bytes, so any text still encodes; its base vocabulary ends with
`num_reserved` pieces no text can produce, which is where OpenVLA's action tokenizer puts the action
bins (the last 256 ids of the base vocabulary).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

SPECIAL = ("<unk>", "<s>", "</s>")
PAD = "<PAD>"
WORD_PREFIX = "▁"
_WORD = re.compile(f"{WORD_PREFIX}?[A-Za-z0-9]+")


def split_words(texts: Iterable[str]) -> list[str]:
    """The distinct word pieces of `texts` as the tokenizer sees them, in first-seen order: "▁word" after
    a space or at the start, bare "word" after punctuation or a newline ("\nOut:" -> "Out")."""
    seen: dict[str, None] = {}
    for text in texts:
        for w in _WORD.findall(WORD_PREFIX + text.replace(" ", WORD_PREFIX)):
            seen.setdefault(w, None)
    return list(seen)


def build_word_tokenizer(words: Iterable[str], num_reserved: int = 256):
    """A `PreTrainedTokenizerFast`: one piece for each of `words` (as `split_words` gives them),
    characters and bytes for anything else, `num_reserved` unreachable pieces at the end of the base
    vocabulary, then <PAD> as an added token (as OpenVLA adds it to Llama-2's)."""
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}

    def add(piece: str) -> None:
        vocab.setdefault(piece, len(vocab))

    for s in SPECIAL:
        add(s)
    for b in range(256):
        add(f"<0x{b:02X}>")
    add(WORD_PREFIX)
    for ch in string.ascii_letters + string.digits + string.punctuation:
        add(ch)
    # Each word is reachable by a chain of merges that grows it one character at a time. "▁" chains rank
    # before bare ones: a pre-token holds one "▁", at its start, so its chain always wins over merges
    # that other words' chains would make inside it ("action"'s "ac" inside "▁reach").
    chains: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for word in sorted(set(words)):
        if not _WORD.fullmatch(word):
            raise ValueError(f"words must be ASCII letters/digits, optionally after {WORD_PREFIX!r}, got {word!r}")
        for end in range(2, len(word) + 1):
            if word[:end] not in vocab:
                chains[word.startswith(WORD_PREFIX)].append((word[: end - 1], word[end - 1]))
                add(word[:end])
    merges = chains[True] + chains[False]
    for i in range(num_reserved):  # never produced by a merge: free for action bins
        add(f"<reserved_{i:03d}>")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(WORD_PREFIX), normalizers.Replace(" ", WORD_PREFIX)])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(f"{WORD_PREFIX}?[A-Za-z0-9]+|{WORD_PREFIX}|[^A-Za-z0-9{WORD_PREFIX}]"),
                                             behavior="isolated")  # fmt: skip
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Sequence(
        [decoders.Replace(WORD_PREFIX, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)  # fmt: skip
    fast.add_special_tokens({"pad_token": PAD})
    return fast


def save_word_tokenizer(words: Iterable[str], out_dir: Path, num_reserved: int = 256) -> Path:
    out_dir = Path(out_dir)
    build_word_tokenizer(words, num_reserved).save_pretrained(out_dir)
    return out_dir
