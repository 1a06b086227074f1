"""Pretrained LLM backbones and their tokenizers, from a local Hugging Face directory or a Hub id.

What the original does for every LLM (`HFCausalLLMBackbone` and its subclasses), and so do we:
- the tokenizer comes from the LLM's own files (its `tokenizer.json` taken as written, as transformers 4.x
  did) with `model_max_length = llm_max_length`, and pads on the right;
- the backbone's pad token is added as a special token (`<PAD>` for Llama-2 / Vicuna / Mistral, `<|pad|>`
  for Phi-2; Qwen2.5 already pads with `<|endoftext|>`), and the model's `pad_token_id` is set to it;
- the embeddings are resized to `len(tokenizer)` rounded up to a multiple of 64 (Llama-2: 32001 -> 32064;
  Phi-2 shrinks 51200 -> 50304, Qwen2.5 151936 -> 151680). Existing rows are kept; new rows are drawn
  from N(0, initializer_range) as transformers did then (`mean_resizing=False`; today's default would
  draw them from the old rows' statistics instead).

A source is a local directory (what `huggingface-cli download <hub id> --local-dir DIR` writes) or a Hub id,
read from the Hugging Face cache when offline. Llama-2 (pure and chat) also has its tokenizer bundled
(`prismatic/assets/tokenizers/llama2`: Meta's, with `<PAD>`), so a released base VLM needs no gated download.
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache

from prismatic.models.llm.backbones import LLM_BACKBONES, LLMBackboneSpec

BUNDLED_TOKENIZERS = Path(__file__).resolve().parents[2] / "assets" / "tokenizers"
PAD_TO_MULTIPLE_OF = 64
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# A tokenizer directory holds one of these (SentencePiece model, fast-tokenizer JSON, or BPE vocab + merges).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class LLMSourceError(FileNotFoundError):
    """An LLM or tokenizer source that is incomplete, unknown, or not available offline."""


def _download_hint(hub_id: str) -> str:
    return f"`huggingface-cli download {hub_id} --local-dir DIR` on a machine with network access, then pass DIR"


def _hub_kwargs(cache_dir: Path | None) -> dict:
    """Where transformers looks for Hub ids: the cache, and only the cache when offline."""
    return {"cache_dir": cache_dir, "local_files_only": hf_constants.is_offline_mode()}


def default_tokenizer_source(spec: LLMBackboneSpec) -> Path | str:
    """The bundled tokenizer when there is one, else the LLM's Hub id."""
    return BUNDLED_TOKENIZERS / spec.bundled_tokenizer if spec.bundled_tokenizer else spec.hf_hub_id


def tokenizer_problems(source: Path | str, cache_dir: Path | None = None) -> list[str]:
    """Why a tokenizer cannot be loaded from `source` (empty: it can, or it will be downloaded)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in _TOKENIZER_FILES):
            return [f"{path} has no tokenizer files (one of {', '.join(_TOKENIZER_FILES)})"]
        return []
    if path.exists() or str(source).startswith((".", "/", "~")):
        return [f"tokenizer source {str(source)!r} is not a directory"]
    cached = try_to_load_from_cache(str(source), "tokenizer_config.json", cache_dir=cache_dir)
    if hf_constants.is_offline_mode() and not isinstance(cached, str):
        return [f"the tokenizer of {source} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                f"{_download_hint(str(source))} with --tokenizer"]  # fmt: skip
    return []


def load_tokenizer(
    llm_backbone_id: str, source: Path | str | None = None, max_length: int = 2048, cache_dir: Path | None = None
):
    """The backbone's tokenizer as the original prepared it: pad token added, right padding, `max_length`."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = LLM_BACKBONES.get(llm_backbone_id)
    source = default_tokenizer_source(spec) if source is None else source
    problems = tokenizer_problems(source, cache_dir)
    if problems:
        raise LLMSourceError("; ".join(problems))
    kwargs = {"model_max_length": max_length, "padding_side": "right", **_hub_kwargs(cache_dir)}
    try:
        # tokenizer.json as written, as transformers 4.x's fast tokenizers read it; transformers 5's model
        # classes rebuild parts of the pipeline (its LlamaTokenizer splits leading spaces differently)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError, TypeError):  # no tokenizer.json (SentencePiece or vocab/merges files only)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
        except OSError as e:
            raise LLMSourceError(f"cannot load the tokenizer of {llm_backbone_id} from {source}: {e}") from e
    tokenizer.add_special_tokens({"pad_token": spec.pad_token})
    return tokenizer


def llm_problems(source: Path | str) -> list[str]:
    """Why an LLM cannot be loaded from a local directory (a Hub id is checked when it is fetched)."""
    path = Path(source).expanduser()
    if not path.exists():
        if str(source).count("/") == 1 and not str(source).startswith((".", "/", "~")):
            return []  # a Hub id
        return [f"LLM source {str(source)!r} is neither a directory nor a Hugging Face Hub id (org/name)"]
    problems = []
    if not (path / "config.json").is_file():
        problems.append(f"{path} has no config.json")
    if not any((path / f).is_file() for f in _WEIGHTS):
        problems.append(f"{path} has no weights (one of {', '.join(_WEIGHTS)})")
    return problems + tokenizer_problems(path)


def load_llm(
    llm_backbone_id: str,
    source: Path | str | None = None,
    max_length: int = 2048,
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | None = None,
):
    """(model, tokenizer): a pretrained causal LM with the pad token added and the vocabulary padded to 64.

    `source`: a local Hugging Face directory or a Hub id (default: the backbone's Hub id)."""
    from transformers import AutoModelForCausalLM

    spec = LLM_BACKBONES.get(llm_backbone_id)
    source = spec.hf_hub_id if source is None else source
    problems = llm_problems(source)
    if problems:
        raise LLMSourceError("; ".join(problems) + f" ({_download_hint(spec.hf_hub_id)})")
    tokenizer = load_tokenizer(llm_backbone_id, source, max_length, cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype, **_hub_kwargs(cache_dir))
    except OSError as e:
        raise LLMSourceError(f"cannot load {llm_backbone_id} from {source}: {e} ({_download_hint(spec.hf_hub_id)})") from e
    if model.config.model_type != spec.model_type:
        raise ValueError(
            f"{source} holds a {model.config.model_type!r} model but {llm_backbone_id} is a {spec.model_type!r} "
            f"one; pass that backbone's weights or choose another --vla.llm_backbone_id"
        )
    model.config.pad_token_id = tokenizer.pad_token_id
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=PAD_TO_MULTIPLE_OF, mean_resizing=False)
    return model, tokenizer
