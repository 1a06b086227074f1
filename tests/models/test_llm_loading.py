"""LLM backbones from a local Hugging Face directory or a Hub id (via the cache), prepared as the original
did: the backbone's pad token added, the vocabulary padded to a multiple of 64, existing rows untouched.

Tiny random models with the real architectures; the Llama-2 / Mistral ones use the real Llama-2 tokenizer,
Phi-2 and Qwen2.5 small byte-level BPE tokenizers with those models' special tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from prismatic.models.llm.backbones import padded_vocab_size
from prismatic.models.llm.loading import LLMSourceError, load_llm, load_tokenizer, tokenizer_problems

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2}  # fmt: skip


def _llama_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_file=str(ASSETS / "llama2-tokenizer" / "tokenizer.json"),
                                   bos_token="<s>", eos_token="</s>", unk_token="<unk>")  # fmt: skip


def _bpe_tokenizer(n_words: int, specials: list[str], **tokens: str) -> PreTrainedTokenizerFast:
    vocab = {chr(ord("a") + i % 26) * (1 + i // 26): i for i in range(n_words)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **tokens)
    fast.add_special_tokens({"additional_special_tokens": specials})
    return fast


# backbone id, transformers model_type, config overrides, tokenizer factory, expected (len, rows, pad token)
CASES = {
    # Llama-2 / Mistral: 32000 pieces + <PAD> = 32001 -> 32064 rows (openvla-7b's vocabulary)
    "llama2-7b-pure": ("llama", {"vocab_size": 32000}, _llama_tokenizer, (32001, 32064, "<PAD>")),
    "mistral-v0.1-7b-pure": ("mistral", {"vocab_size": 32000}, _llama_tokenizer, (32001, 32064, "<PAD>")),
    # Phi-2: <|pad|> is added, and the 51200-row embedding shrinks to the padded tokenizer length
    "phi-2-3b": ("phi", {"vocab_size": 400}, lambda: _bpe_tokenizer(
        300, ["<|endoftext|>"], bos_token="<|endoftext|>", eos_token="<|endoftext|>"), (302, 320, "<|pad|>")),
    # Qwen2.5: pads with its own <|endoftext|> (nothing added); tied embeddings stay tied
    "qwen2.5-0.5b-pure": ("qwen2", {"vocab_size": 400, "tie_word_embeddings": True}, lambda: _bpe_tokenizer(
        300, ["<|endoftext|>"], eos_token="<|endoftext|>", pad_token="<|endoftext|>"), (301, 320, "<|endoftext|>")),
}  # fmt: skip


def _save_tiny_llm(out: Path, model_type: str, overrides: dict, make_tokenizer) -> AutoModelForCausalLM:
    config = AutoConfig.for_model(model_type, **TINY, **overrides)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # shifted away from 0, so rows drawn from the old rows' statistics would show
        model.get_input_embeddings().weight.add_(3.0)
    model.save_pretrained(out)
    make_tokenizer().save_pretrained(out)
    return model


@pytest.mark.parametrize("backbone_id", list(CASES))
def test_local_directory_loads_with_pad_token_and_padded_vocabulary(backbone_id, tmp_path):
    model_type, overrides, make_tokenizer, (n_tokens, rows, pad) = CASES[backbone_id]
    original = _save_tiny_llm(tmp_path, model_type, overrides, make_tokenizer)
    model, tok = load_llm(backbone_id, tmp_path, max_length=512)
    assert (len(tok), tok.pad_token, tok.pad_token_id) == (n_tokens, pad, tok.convert_tokens_to_ids(pad))
    assert tok.model_max_length == 512 and tok.padding_side == "right"
    assert model.config.pad_token_id == tok.pad_token_id and model.config.vocab_size == rows
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == head.shape[0] == rows and rows % 64 == 0
    keep = min(rows, original.config.vocab_size)
    assert torch.equal(emb[:keep], original.get_input_embeddings().weight[:keep])  # existing rows untouched
    assert torch.equal(head[:keep], original.get_output_embeddings().weight[:keep])
    if overrides.get("tie_word_embeddings"):
        assert head.data_ptr() == emb.data_ptr()
    if rows > original.config.vocab_size:  # new rows: N(0, initializer_range), as transformers 4.40 drew them
        new = emb[original.config.vocab_size :]
        assert abs(new.mean().item()) < 0.01 and new.std().item() == pytest.approx(0.02, rel=0.2)


def test_hub_id_loads_from_the_hf_cache_when_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub"
    snapshot = cache / "models--Qwen--Qwen2.5-0.5B" / "snapshots" / ("a" * 40)
    _save_tiny_llm(snapshot, *CASES["qwen2.5-0.5b-pure"][:3])
    (cache / "models--Qwen--Qwen2.5-0.5B" / "refs").mkdir()
    (cache / "models--Qwen--Qwen2.5-0.5B" / "refs" / "main").write_text("a" * 40)
    model, tok = load_llm("qwen2.5-0.5b-pure", cache_dir=cache)  # the Hub id is the default source
    assert model.config.vocab_size == 320 and tok.pad_token == "<|endoftext|>"


def test_missing_or_wrong_sources_say_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LLMSourceError, match=r"huggingface-cli download Qwen/Qwen2.5-0.5B --local-dir DIR"):
        load_llm("qwen2.5-0.5b-pure", cache_dir=tmp_path / "empty-cache")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(LLMSourceError, match=r"half has no weights .*has no tokenizer files"):
        load_llm("llama2-7b-pure", tmp_path / "half")
    with pytest.raises(LLMSourceError, match="neither a directory nor a Hugging Face Hub id"):
        load_llm("llama2-7b-pure", tmp_path / "nowhere")
    _save_tiny_llm(tmp_path / "qwen", *CASES["qwen2.5-0.5b-pure"][:3])
    with pytest.raises(ValueError, match=r"holds a 'qwen2' model but llama2-7b-pure is a 'llama' one"):
        load_llm("llama2-7b-pure", tmp_path / "qwen")
    assert tokenizer_problems("mistralai/Mistral-7B-v0.1") and "not in the Hugging Face cache" in tokenizer_problems(
        "mistralai/Mistral-7B-v0.1")[0]  # fmt: skip


def test_llama2_tokenizer_is_bundled_and_matches_the_reference():
    """Released Llama-2 base VLMs need no gated download: the bundled tokenizer is Meta's plus <PAD>."""
    bundled = load_tokenizer("llama2-7b-chat")
    reference = _llama_tokenizer()
    assert (len(bundled), bundled.pad_token_id, bundled.model_max_length) == (32001, 32000, 2048)
    texts = (ASSETS / "llama2-tokenizer" / "test-vectors.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    expected = [[int(t) for t in line.split()] for line in (ASSETS / "llama2-tokenizer" / "test-vectors.out").read_text().splitlines()]
    assert len(expected) == 46  # SentencePiece's own ids, leading spaces included
    for text, ids in zip(texts, expected):
        assert bundled(text).input_ids == [bundled.bos_token_id] + ids, repr(text)
        assert reference(text, add_special_tokens=False).input_ids == ids


def test_registry_vocabularies_are_the_originals():
    """The embedding rows a fresh config gets (no checkpoint) follow the same rule as `load_llm`."""
    from prismatic.models.configuration import PrismaticConfig
    from prismatic.models.llm.backbones import LLM_BACKBONES

    rows = {n: PrismaticConfig(llm_backbone_id=n).text_config.vocab_size for n in LLM_BACKBONES.names()}
    assert rows == {n: 32064 for n in rows if n.startswith(("llama2", "vicuna", "mistral"))} | {
        "phi-2-3b": 50304, "qwen2.5-0.5b-pure": 151680}  # fmt: skip
    for name, (_, _, make_tokenizer, (n_tokens, expected_rows, _)) in CASES.items():  # same rule, tiny tokenizers
        spec = LLM_BACKBONES.get(name)
        assert expected_rows == padded_vocab_size(len(make_tokenizer()) + spec.adds_pad_token) and n_tokens == len(
            make_tokenizer()) + spec.adds_pad_token  # fmt: skip
