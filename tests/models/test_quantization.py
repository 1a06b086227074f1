"""Quantised inference (`load_vla(quantize="8bit"|"4bit")`, `prismatic.models.quantization`) on CPU with the
tiny reference checkpoint.

What is asserted exactly: which layers are quantised, the bytes per weight of their payload, the memory
accounting, that in-memory quantisation (random-weight benchmarks) is bit-identical to quantised loading,
that every predicted action is one the 256 bins decode to, and that the fast decoding path gives the eager
path's tokens. Closeness to the full-precision model is asserted where it can be derived: on each weight,
from the quantisation formats' rounding (row-wise int8; NF4 levels in blocks of 64 with a quantised
scale). The actions themselves are argmaxes of a random-weight model's logits, whose near-ties any weight
error may flip, so no bound on them follows from the weights' error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from prismatic.models.load import CheckpointError, load_vla
from prismatic.models.quantization import (
    SKIP_MODULES,
    cpu_incompatible_layers,
    import_bitsandbytes,
    quantize_,
    require_bitsandbytes,
    weight_memory,
)

TINY = Path(__file__).resolve().parents[1] / "assets" / "openvla-tiny"
CKPT = TINY / "checkpoint"
bnb = import_bitsandbytes()
pytestmark = pytest.mark.skipif(
    bnb is None, reason="bitsandbytes is not installed (the `train` extra on Linux)"
)
F32_EPS = torch.finfo(torch.float32).eps


def linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every layer that is, or was, an nn.Linear (bitsandbytes' layers subclass it)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def is_skipped(name: str) -> bool:
    return bool(set(SKIP_MODULES) & set(name.split(".")))


@pytest.fixture(scope="module")
def full():
    return load_vla(CKPT)


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_layers_payload_and_memory(full, quantization):
    vla = load_vla(CKPT, quantize=quantization)
    layer_type = {"8bit": bnb.nn.Linear8bitLt, "4bit": bnb.nn.Linear4bit}[quantization]
    kept = {p.strip("^$").replace("\\", "") for p in cpu_incompatible_layers(full.model, quantization)}
    reference = linear_layers(full.model)
    layers = linear_layers(vla.model)
    assert layers.keys() == reference.keys()
    quantized = {n for n, m in layers.items() if isinstance(m, layer_type)}
    assert quantized == {n for n in layers if not is_skipped(n) and n not in kept}
    assert all(
        type(layers[n]) is nn.Linear for n in layers.keys() - quantized
    )  # projector, head, CPU exceptions
    assert quantization == "8bit" or kept  # the tiny model has layers the CPU 4-bit kernel cannot run
    for name in quantized:  # the payload: 8 or 4 bits per weight
        ref, weight = reference[name], layers[name].weight
        if quantization == "8bit":
            assert weight.dtype == torch.int8 and weight.numel() == ref.in_features * ref.out_features
            assert weight.SCB.shape == (ref.out_features,)  # one fp32 scale per output row
        else:
            assert weight.dtype == torch.uint8 and weight.numel() * 2 == ref.in_features * ref.out_features

    mem, mem_full = weight_memory(vla.model), weight_memory(full.model)
    assert mem["quantization"] == quantization and mem_full["quantization"] is None
    assert mem["unquantized_bytes"] == mem_full["weight_bytes"]  # same model, counted without quantisation
    params = sum(reference[n].weight.numel() + (reference[n].out_features if reference[n].bias is not None else 0)
                 for n in quantized)  # fmt: skip
    assert mem["quantized_layer_params"] == params
    assert (
        mem["weight_bytes"] == mem_full["weight_bytes"] - 4 * params + mem["quantized_layer_bytes"]
    )  # fp32 base
    assert params // {"8bit": 1, "4bit": 2}[quantization] <= mem["quantized_layer_bytes"] < 4 * params / 2


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_weights_are_the_checkpoints_within_the_formats_rounding(full, quantization):
    vla = load_vla(CKPT, quantize=quantization)
    reference = linear_layers(full.model)
    checked = 0
    for name, layer in linear_layers(vla.model).items():
        w = reference[name].weight.detach()
        if quantization == "8bit" and isinstance(layer, bnb.nn.Linear8bitLt):
            # LLM.int8: each row of fp16(w) scaled by 127 / its absmax and rounded: error <= absmax / 254
            scale = layer.weight.SCB.float()[:, None]
            approx = layer.weight.data.float() * scale / 127
            assert torch.equal(scale, w.half().float().abs().amax(dim=1, keepdim=True))
            assert ((approx - w.half().float()).abs() <= scale / 254 + 4 * F32_EPS * scale).all(), name
            checked += 1
        elif quantization == "4bit" and isinstance(layer, bnb.nn.Linear4bit):
            # NF4: each block of 64 weights divided by its absmax a, rounded to the nearest of 16 levels in
            # [-1, 1]; a itself is stored quantised (double quantisation) as a_hat, used to de-quantise:
            # |w - level * a_hat| <= a * (largest gap between levels) / 2 + |a - a_hat|
            state = layer.weight.quant_state
            assert (state.quant_type, state.blocksize, state.nested) == ("nf4", 64, True)
            approx = bnb.functional.dequantize_4bit(layer.weight.data, state).float()
            a_hat = (bnb.functional.dequantize_blockwise(state.absmax, state.state2) + state.offset).float()
            blocks, approx_blocks = w.reshape(-1, 64), approx.reshape(-1, 64)
            a = blocks.abs().amax(dim=1)
            half_gap = state.code.sort().values.diff().max() / 2
            bound = a * half_gap + (a - a_hat).abs() + 4 * F32_EPS * a
            assert ((approx_blocks - blocks).abs().amax(dim=1) <= bound).all(), name
            checked += 1
    assert checked > 10


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_in_memory_quantisation_equals_quantised_loading(quantization):
    loaded = load_vla(CKPT, quantize=quantization).model
    model = load_vla(CKPT).model
    quantize_(model, quantization, torch.float32)  # on a CPU: the same layers kept in full precision
    assert getattr(model, f"is_loaded_in_{quantization}") and loaded.dtype == model.dtype
    a, b = loaded.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_predictions(full, reference, quantization):
    vla = load_vla(CKPT, quantize=quantization)
    images = [Image.open(TINY / c["image"]) for c in reference["cases"]]
    instructions = [c["instruction"] for c in reference["cases"]]
    key = "bridge_orig"
    one = vla.predict_action(images[0], instructions[0], unnorm_key=key)
    assert one.shape == (7,) and np.isfinite(one).all()
    # every action is one of the 256 bins' un-normalised values, per dimension
    tokenizer = vla.model.action_tokenizer
    ids = np.arange(tokenizer.first_token_id, tokenizer.last_token_id + 1)
    values = vla.model.decode_actions(np.repeat(ids[:, None], 7, axis=1), key)  # [256, 7]
    assert all(one[d] in values[:, d] for d in range(7))
    batch = vla.predict_actions(images, instructions, unnorm_key=key, decode="eager")
    static = vla.predict_actions(images, instructions, unnorm_key=key, decode="static")
    np.testing.assert_array_equal(static, batch)  # the fast path on quantised layers: the same tokens
    np.testing.assert_array_equal(batch[0], one)  # a left-padded batch row equals its one-by-one result


def test_bad_requests_fail_before_loading(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="quantize='3bit' is not one of: 8bit, 4bit"):
        load_vla(tmp_path / "absent", quantize="3bit")  # named before the path is even looked at
    with pytest.raises(ValueError, match="not both"):
        load_vla(CKPT, quantize="8bit", quantization_config=object())
    with pytest.raises(ValueError, match="decode='fast' is not one of: auto, eager, static, graphs"):
        load_vla(CKPT, decode="fast")
    native = tmp_path / "native-run"
    (native / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="convert_native_to_hf.py"):
        load_vla(native, quantize="4bit")
    with pytest.raises(RuntimeError, match=r"cannot run 4bit layers on device 'meta'"):
        require_bitsandbytes("4bit", "meta")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
        with pytest.raises(
            ImportError, match=r"quantize='8bit' needs bitsandbytes >= 0.48.*uv sync --extra train"
        ):
            load_vla(CKPT, quantize="8bit")


def test_random_quantised_build_predicts_on_the_fast_path(tiny_checkpoint):
    """What the GPU benchmarks build: the architecture on the meta device, random weights on the device,
    quantised in memory."""
    from prismatic.models.configuration import OpenVLAConfig
    from prismatic.models.load import build_random_on_device

    model = build_random_on_device(
        OpenVLAConfig.from_pretrained(tiny_checkpoint), "cpu", torch.float32, quantize="4bit"
    )
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) > 10 and model.is_loaded_in_4bit
    ids, pixels = torch.tensor([[1, 512, 29901, 3744, 29901]]), torch.randn(1, 6, 224, 224)
    eager = model.eval().generate_action_tokens(ids, pixels, decode="eager")
    assert torch.equal(model.generate_action_tokens(ids, pixels, decode="static"), eager)
