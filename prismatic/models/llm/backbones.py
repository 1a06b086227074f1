"""LLM backbones: architecture (as a transformers config), tokenizer conventions and prompt format.

Architectures are written out here (not fetched) so any model can be built offline, e.g. on the
meta device to check a checkpoint's shapes; weights always come from a local directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from prismatic.util.registry import Registry


@dataclass(frozen=True)
class LLMBackboneSpec:
    id: str
    hf_hub_id: str
    model_type: str  # transformers model_type
    arch: dict[str, Any]  # transformers config fields of the full-size model
    prompt_builder: str  # key in prismatic.models.llm.prompting.PROMPT_BUILDERS
    pad_token: str = "<PAD>"  # added to the tokenizer for training (Llama-2 has none)
    empty_token_id: int | None = None  # lone "▁" piece that precedes action tokens (SentencePiece vocabularies)
    bundled_tokenizer: str | None = None  # directory under prismatic/assets/tokenizers with this LLM's tokenizer
    tokenizer_size: int = 32000  # len() of the LLM's own tokenizer (added tokens included, before the pad token)
    adds_pad_token: bool = True  # False: the tokenizer already has `pad_token` (Qwen2.5's <|endoftext|>)
    max_length: int = 2048
    tiny: dict[str, Any] = field(
        default_factory=lambda: {
            "hidden_size": 64,
            "intermediate_size": 160,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
        }
    )

    def embedding_rows(self, multiple: int = 64) -> int:
        """Rows of the embedding after the original's preparation: the pad token added (unless the tokenizer
        already has it), then `resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)`."""
        return padded_vocab_size(self.tokenizer_size + int(self.adds_pad_token), multiple)

    def text_config(self, vocab_size: int | None = None, tiny: bool = False, **overrides: Any) -> PreTrainedConfig:
        fields = dict(self.arch)
        if tiny:
            fields.update(self.tiny)
        if vocab_size is not None:
            fields["vocab_size"] = vocab_size
        fields.update(overrides)
        return AutoConfig.for_model(self.model_type, **fields)


LLM_BACKBONES: Registry[LLMBackboneSpec] = Registry("LLM backbone", flag="llm_backbone_id")

_LLAMA2_7B = dict(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
    vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
)  # fmt: skip
_LLAMA2_13B = {**_LLAMA2_7B, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
               "num_attention_heads": 40, "num_key_value_heads": 40}  # fmt: skip
_MISTRAL_7B = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
    vocab_size=32000, max_position_embeddings=32768, rms_norm_eps=1e-5, sliding_window=4096, bos_token_id=1,
    eos_token_id=2,
)  # fmt: skip
_PHI2 = dict(
    hidden_size=2560, intermediate_size=10240, num_hidden_layers=32, num_attention_heads=32, vocab_size=51200,
    max_position_embeddings=2048, partial_rotary_factor=0.4, layer_norm_eps=1e-5, bos_token_id=50256,
    eos_token_id=50256,
)  # fmt: skip
_QWEN25_05B = dict(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
    vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
    tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643,
)  # fmt: skip

for _spec in (
    # Meta's Llama-2 models share one tokenizer (bundled: the one openvla-7b ships, with <PAD>).
    LLMBackboneSpec("llama2-7b-pure", "meta-llama/Llama-2-7b-hf", "llama", _LLAMA2_7B, "pure", empty_token_id=29871,
                    bundled_tokenizer="llama2"),
    LLMBackboneSpec("llama2-13b-pure", "meta-llama/Llama-2-13b-hf", "llama", _LLAMA2_13B, "pure", empty_token_id=29871,
                    bundled_tokenizer="llama2"),
    LLMBackboneSpec("llama2-7b-chat", "meta-llama/Llama-2-7b-chat-hf", "llama", _LLAMA2_7B, "llama2-chat",
                    empty_token_id=29871, bundled_tokenizer="llama2"),
    LLMBackboneSpec("llama2-13b-chat", "meta-llama/Llama-2-13b-chat-hf", "llama", _LLAMA2_13B, "llama2-chat",
                    empty_token_id=29871, bundled_tokenizer="llama2"),
    LLMBackboneSpec("vicuna-v15-7b", "lmsys/vicuna-7b-v1.5", "llama", _LLAMA2_7B, "vicuna-v15", empty_token_id=29871),
    LLMBackboneSpec("vicuna-v15-13b", "lmsys/vicuna-13b-v1.5", "llama", _LLAMA2_13B, "vicuna-v15",
                    empty_token_id=29871),
    LLMBackboneSpec("mistral-v0.1-7b-pure", "mistralai/Mistral-7B-v0.1", "mistral", _MISTRAL_7B, "pure",
                    empty_token_id=28705),
    LLMBackboneSpec("mistral-v0.1-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.1", "mistral", _MISTRAL_7B,
                    "mistral-instruct", empty_token_id=28705),
    LLMBackboneSpec("phi-2-3b", "microsoft/phi-2", "phi", _PHI2, "phi-2", pad_token="<|pad|>", tokenizer_size=50295),
    LLMBackboneSpec("qwen2.5-0.5b-pure", "Qwen/Qwen2.5-0.5B", "qwen2", _QWEN25_05B, "qwen-pure",
                    pad_token="<|endoftext|>", adds_pad_token=False, max_length=2048, tokenizer_size=151665,
                    tiny={"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "num_key_value_heads": 2}),
):  # fmt: skip
    LLM_BACKBONES.register(_spec.id, _spec)


def padded_vocab_size(n_tokens: int, multiple: int = 64) -> int:
    """Embedding rows after adding the pad token, rounded up for tensor-core friendly shapes."""
    return ((n_tokens + multiple - 1) // multiple) * multiple
