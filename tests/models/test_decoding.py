"""The fast decoding path (`prismatic.models.decoding`): static KV cache + CUDA graphs.

On CPU the static-cache steps run uncaptured; what a graph would replay is exactly these steps, and a test
checks they never read a tensor value on the host (what capture forbids). Token ids are compared exactly
with the eager loop and the original implementation's reference; per-step logits against transformers'
`generate` within fp32 rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from prismatic.models.configuration import OpenVLAConfig
from prismatic.models.decoding import CACHE_BUCKET, DECODE_MODES, decoder_for, greedy, resolve_decode_mode
from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.modeling import OpenVLAForActionPrediction
from prismatic.models.vision.backbones import VISION_BACKBONES

TINY = Path(__file__).resolve().parents[1] / "assets" / "openvla-tiny"
EMPTY = 29871  # the "▁" the model expects before action tokens


def images(reference) -> list[Image.Image]:
    return [Image.open(TINY / c["image"]) for c in reference["cases"]]


def padded_batch(vla, reference) -> dict[str, torch.Tensor]:
    """The three reference images with their instructions (different lengths: a left-padded batch)."""
    inputs = vla.processor([vla.prompt(c["instruction"]) for c in reference["cases"]], images(reference))
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == 3  # really padded
    return inputs


def tokens(model, inputs, decode: str, **kw) -> torch.Tensor:
    return model.generate_action_tokens(inputs["input_ids"], inputs["pixel_values"], inputs.get("attention_mask"),
                                        decode=decode, **kw)  # fmt: skip


@pytest.mark.parametrize("i", range(3))
def test_static_path_gives_the_original_implementations_tokens(tiny_vla, reference, i):
    case = reference["cases"][i]
    inputs = tiny_vla.processor(case["prompt"], Image.open(TINY / case["image"]))
    static = tokens(tiny_vla.model, inputs, "static")
    assert static[0].tolist() == case["generated_action_token_ids"]
    assert torch.equal(static, tokens(tiny_vla.model, inputs, "eager"))


def test_left_padded_batch_equals_eager_and_one_by_one(tiny_vla, reference):
    model, inputs = tiny_vla.model, padded_batch(tiny_vla, reference)
    static = tokens(model, inputs, "static")
    assert static.shape == (3, 7)
    assert torch.equal(static, tokens(model, inputs, "eager"))
    for row, case in enumerate(reference["cases"]):  # each row is its own batch-1 result
        alone = tiny_vla.processor(tiny_vla.prompt(case["instruction"]), Image.open(TINY / case["image"]))
        assert torch.equal(static[row : row + 1], tokens(model, alone, "static"))


def test_step_logits_equal_transformers_generate_within_fp32_rounding(tiny_vla, reference):
    """Stronger than token ids (the tiny model repeats tokens): every step's logits against `generate`'s,
    which decodes on a growing dynamic cache. The two differ only in attention over the bucket's masked
    padding (exact zeros, summed in another order): a sum of <= C terms in fp32 is off by at most
    C * eps relative, once per layer and once in the head, which bounds the logits' deviation relative to
    their scale. A wrong position or mask moves them by orders of magnitude more."""
    model, inputs = tiny_vla.model, padded_batch(tiny_vla, reference)
    ids = torch.cat([inputs["input_ids"], torch.full((3, 1), EMPTY)], dim=1)
    mask = torch.cat([inputs["attention_mask"], torch.ones(3, 1, dtype=torch.long)], dim=1)
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=mask, pixel_values=inputs["pixel_values"], max_new_tokens=7,
                             do_sample=False, output_logits=True, return_dict_in_generate=True)  # fmt: skip
    seen: list[torch.Tensor] = []

    def recording_greedy(logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits.clone())
        return greedy(logits)

    got = decoder_for(model).generate(ids, inputs["pixel_values"], mask, 7, pick=recording_greedy)
    assert torch.equal(got, ref.sequences[:, -7:])
    n_layers = model.config.text_config.num_hidden_layers
    rel = CACHE_BUCKET * 8 * torch.finfo(torch.float32).eps * (n_layers + 1)  # C <= 8 buckets here: 512 keys
    for step, (a, b) in enumerate(zip(seen, ref.logits)):
        scale = b.abs().max()
        assert (a - b).abs().max() <= rel * scale, (step, float((a - b).abs().max() / scale))


def test_sampling_draws_what_the_eager_loop_draws(tiny_vla, reference):
    model, inputs = tiny_vla.model, padded_batch(tiny_vla, reference)
    draws = {}
    for mode in ("eager", "static"):
        generator = torch.Generator().manual_seed(3)
        draws[mode] = tokens(model, inputs, mode, do_sample=True, temperature=2.0, generator=generator)
    assert torch.equal(draws["eager"], draws["static"])
    assert not torch.equal(draws["static"], tokens(model, inputs, "static"))  # it really sampled


class NoHostReads(TorchDispatchMode):
    """Fails on any op that brings a tensor value to the host (`.item()`, `bool(t)`, data-dependent shapes):
    on a GPU these synchronise, and inside CUDA graph capture they are errors."""

    FORBIDDEN = {torch.ops.aten._local_scalar_dense, torch.ops.aten.item, torch.ops.aten.is_nonzero,
                 torch.ops.aten.nonzero, torch.ops.aten.masked_select, torch.ops.aten.unique_consecutive}  # fmt: skip

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.FORBIDDEN:
            raise AssertionError(f"host read of a tensor value: {func}")
        return func(*args, **(kwargs or {}))


def test_decoding_steps_never_read_a_tensor_value_on_the_host(tiny_vla, reference):
    model, inputs = tiny_vla.model, padded_batch(tiny_vla, reference)
    expected = tokens(model, inputs, "static")
    decoder = decoder_for(model)
    slot = next(reversed(decoder._slots.values()))  # the slot that batch used
    with torch.inference_mode(), NoHostReads():
        decoder.run_steps(slot, greedy)  # exactly what `decode="graphs"` captures
    assert torch.equal(slot.out, expected[:, 1:])  # replaying the steps gives the same tokens again
    with pytest.raises(AssertionError, match="host read"), NoHostReads():  # and the guard does catch reads
        bool(torch.ones(1))


def test_decoding_steps_create_nothing_on_the_host(tiny_checkpoint):
    """With the model and every buffer on the meta device, a step that made a CPU tensor and combined it with
    device tensors (a host-to-device copy inside a captured graph) would fail, as would any host read."""
    from prismatic.models.decoding import _Slot

    config = OpenVLAConfig.from_pretrained(tiny_checkpoint)
    with torch.device("meta"):
        model = OpenVLAForActionPrediction(config).eval()
    slot = _Slot.allocate(config.text_config.num_hidden_layers, 2, 2 * CACHE_BUCKET, 6, torch.device("meta"))
    text = config.text_config
    kv = torch.empty(2, text.num_key_value_heads, CACHE_BUCKET + 3, text.hidden_size // text.num_attention_heads,
                     device="meta")  # fmt: skip
    for layer in slot.cache.layers:
        layer.lazy_initialization(kv, kv)
    with torch.inference_mode():
        decoder_for(model).run_steps(slot, greedy)
    assert slot.out.is_meta and slot.out.shape == (2, 6)


def tiny_model(llm_id: str) -> OpenVLAForActionPrediction:
    torch.manual_seed(0)
    text = LLM_BACKBONES.get(llm_id).text_config(tiny=True, vocab_size=512, pad_token_id=0).to_dict()
    config = OpenVLAConfig(
        vision_backbone_id="siglip-vit-so400m", llm_backbone_id=llm_id, text_config=text, pad_token_id=0,
        timm_model_kwargs=VISION_BACKBONES.get("siglip-vit-so400m").tiny_kwargs(), arch_specifier="no-align+gelu-mlp",
        empty_token_before_actions=False, norm_stats={},
    )  # fmt: skip
    model = OpenVLAForActionPrediction(config).eval()
    with torch.no_grad():  # larger weights than the default init: tokens that vary from step to step
        for p in model.language_model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize(
    "llm_id", ["llama2-7b-pure", "mistral-v0.1-7b-pure", "phi-2-3b", "qwen2.5-0.5b-pure"]
)
def test_every_llm_family_static_equals_eager(llm_id):
    model = tiny_model(llm_id)
    ids = torch.randint(3, 500, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # second row left-padded
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(2, 3, 224, 224)}
    eager = tokens(model, inputs, "eager")
    assert torch.equal(tokens(model, inputs, "static"), eager)
    assert len(set(eager[0].tolist())) > 1  # the tokens vary, so positions and masks are exercised


def test_one_slot_serves_a_bucket_and_replaced_weights_reset_the_slots(reference):
    from prismatic.models.load import load_vla

    vla = load_vla(TINY / "checkpoint")  # own copy: its weights are replaced below
    model, decoder = vla.model, decoder_for(vla.model)
    short, long_ = (
        vla.processor(vla.prompt(s), images(reference)[0]) for s in ("go", "put the carrot on the plate")
    )
    assert short["input_ids"].shape[1] != long_["input_ids"].shape[1]
    for inputs in (short, long_):
        tokens(model, inputs, "static")
    assert len(decoder._slots) == 1  # both prompt lengths fall in one cache bucket
    before = tokens(model, short, "static")
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().flip(0).clone())  # a new tensor: new pointers
    after = tokens(model, short, "static")
    assert len(decoder._slots) == 1 and not torch.equal(after, before)
    assert torch.equal(after, tokens(model, short, "eager"))


def test_decode_modes_resolve_and_bad_ones_fail_with_the_choices(tiny_vla, reference):
    model = tiny_vla.model
    assert resolve_decode_mode("auto", model) == "eager"  # CPU: no launch overhead to remove
    assert resolve_decode_mode("static", model) == "static"
    with pytest.raises(ValueError, match="auto, eager, static, graphs"):
        resolve_decode_mode("fast", model)
    with pytest.raises(ValueError, match="decode='static'"):
        resolve_decode_mode("graphs", model)  # CUDA graphs on a CPU model
    inputs = tiny_vla.processor(tiny_vla.prompt("go"), images(reference)[0])
    with pytest.raises(ValueError, match="not one of"):
        tiny_vla.model.predict_action(**inputs, unnorm_key="bridge_orig", decode="fastest")
    assert set(DECODE_MODES) == {"auto", "eager", "static", "graphs"}


def test_flash_attention_models_need_eager_decoding(tiny_vla):
    model = tiny_vla.model
    config = model.language_model.config
    saved = config._attn_implementation
    try:
        config._attn_implementation = "flash_attention_2"
        assert resolve_decode_mode("auto", model) == "eager"
        with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
            resolve_decode_mode("static", model)
    finally:
        config._attn_implementation = saved


def test_vla_default_decode_mode_reaches_the_model(tiny_vla, reference):
    case = reference["cases"][1]
    image, key = images(reference)[1], case["unnorm_key"]
    static = tiny_vla.predict_action(image, case["instruction"], unnorm_key=key, decode="static")
    np.testing.assert_array_equal(
        static, tiny_vla.predict_action(image, case["instruction"], unnorm_key=key, decode="eager")
    )
    np.testing.assert_allclose(static, case["action"], atol=reference["tolerances"]["action_abs"])
    batch = tiny_vla.predict_actions(
        [image, image], [case["instruction"], "go"], unnorm_key=key, decode="static"
    )
    np.testing.assert_array_equal(batch[0], static)
