"""bitsandbytes quantisation: 8-bit (LLM.int8) and 4-bit (NF4) weights for inference (`load_vla(quantize=...)`,
the evaluation scripts, the server) and for QLoRA bases (`prismatic.training.lora`).

Every Linear layer of the vision backbone and the LLM is quantised; the projector and the LM head stay in
full precision (`SKIP_MODULES`). 8bit: LLM.int8 (int8 weights with one fp32 scale per output row; input
columns with outliers above 6.0 computed in 16 bit), what the original OpenVLA's `--load_in_8bit` gives.
4bit: NF4 in blocks of 64 with double-quantised scales, computed in the model's dtype (the QLoRA recipe;
the original's `--load_in_4bit` used transformers' default FP4 computed in fp32, which loses more).

On a CPU, bitsandbytes' 4-bit inference kernel (taken in eval mode on CPUs with AVX512-BF16) handles only
layers whose out_features is a multiple of 32 and in_features a multiple of the 64-weight block;
`cpu_incompatible_layers` names the others, which loading on a CPU keeps in full precision (on every CPU,
so results do not depend on the CPU's instruction set). In openvla-7b these are SigLIP's MLPs (4304 wide).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
import torch.nn as nn

QUANTIZATIONS = ("8bit", "4bit")
# Kept in full precision. The original OpenVLA skipped only the projector in training and only the LM head
# at inference; we keep both: the head produces the action-token logits directly (and gets no LoRA
# adapter), and the two are ~2% of a 7B model's weights. A VLA's own action head (OpenVLA-OFT) is small and
# trained in full, so it stays in full precision too; "projector" also matches `proprio_projector` (module
# names match by substring).
SKIP_MODULES = ("projector", "lm_head", "action_head")
CPU_4BIT_OUT_MULTIPLE = 32  # bitsandbytes' CPU 4-bit kernel packs output rows in blocks of 32 ...
BLOCK_4BIT = 64  # ... and reshapes the scales to [out, in / block] (transformers' default NF4 block size)

_INSTALL_HINT = (
    "bitsandbytes >= 0.48 (CUDA and CPU kernels) is in the `train` extra on Linux: `uv sync --extra train`; "
    "elsewhere `uv pip install 'bitsandbytes>=0.48'` where a wheel exists for your platform"
)


def check_quantization(quantization: str, flag: str = "quantize") -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"{flag}={quantization!r} is not one of: {', '.join(QUANTIZATIONS)}")


def import_bitsandbytes():
    """bitsandbytes, or None if it is not installed. Quiet: on AVX512-BF16 CPUs its import tries to fetch an
    optional fused kernel from the Hugging Face Hub (`kernels` package) and falls back to its bundled
    kernels, which is what we want (no downloads at run time)."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError:
        return None
    return bitsandbytes


def require_bitsandbytes(quantization: str, device: torch.device | str, flag: str = "quantize"):
    """bitsandbytes, after running one small `quantization` layer on `device` (inference): fails before any
    model is built, with what to install or which device to pick."""
    check_quantization(quantization, flag)
    bnb = import_bitsandbytes()
    if bnb is None:
        raise ImportError(
            f"{flag}={quantization!r} needs {_INSTALL_HINT}; or load the model without quantisation"
        )
    device = torch.device(device)
    try:
        with torch.inference_mode():
            layer = _small_layer(bnb, quantization, torch.float32).to(device).eval()
            out = layer(torch.randn(2, 64, device=device))
        if not torch.isfinite(out).all():
            raise RuntimeError("non-finite output")
    except Exception as e:
        raise RuntimeError(
            f"{flag}={quantization!r}: bitsandbytes {bnb.__version__} cannot run {quantization} layers on device "
            f"{device.type!r} ({type(e).__name__}: {e}). bitsandbytes supports CUDA and CPU (x86-64, aarch64): pick one, "
            "or load without quantisation."
        ) from e
    return bnb


def _small_layer(bnb, quantization: str, compute_dtype: torch.dtype) -> nn.Module:
    if quantization == "4bit":
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=compute_dtype, quant_type="nf4")
    else:
        layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
    layer.load_state_dict(nn.Linear(64, 64).state_dict())  # quantised when it reaches its device
    return layer


def bitsandbytes_config(
    quantization: str, compute_dtype: torch.dtype, skip: tuple[str, ...] | list[str] = SKIP_MODULES
):
    """transformers' `BitsAndBytesConfig` (for `from_pretrained(quantization_config=...)`): see the module doc."""
    from transformers import BitsAndBytesConfig

    check_quantization(quantization)
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=list(skip))  # fmt: skip
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip))


def cpu_incompatible_layers(model: nn.Module, quantization: str) -> list[str]:
    """Names (as exact-match patterns for `llm_int8_skip_modules`) of the Linear layers bitsandbytes cannot run
    `quantization` on a CPU at inference. `model` may live on the meta device."""
    if quantization != "4bit":
        return []
    return [f"^{re.escape(name)}$" for name, m in model.named_modules()
            if type(m) is nn.Linear and (m.out_features % CPU_4BIT_OUT_MULTIPLE or m.in_features % BLOCK_4BIT)]  # fmt: skip


def quantization_of(model: nn.Module) -> str | None:
    """The model's quantisation from its layers: "4bit", "8bit" or None."""
    bnb = import_bitsandbytes()
    if bnb is None:
        return None
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            return "4bit"
        if isinstance(module, bnb.nn.Linear8bitLt):
            return "8bit"
    return None


def quantize_(
    model: nn.Module,
    quantization: str,
    compute_dtype: torch.dtype,
    skip: tuple[str, ...] | list[str] | None = None,
) -> nn.Module:
    """Quantise a materialised model's Linear layers in place, through the same transformers and bitsandbytes
    calls as loading a checkpoint with `bitsandbytes_config(...)` (bit-identical, tested): for random-weight
    models (benchmarks), which have no checkpoint to load. Each layer is quantised on its weight's device.
    `skip` defaults to what loading keeps in full precision there (`SKIP_MODULES`, and on a CPU
    `cpu_incompatible_layers`)."""
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    device = next(model.parameters()).device
    bnb = require_bitsandbytes(quantization, device)
    if skip is None:
        skip = [
            *SKIP_MODULES,
            *(cpu_incompatible_layers(model, quantization) if device.type == "cpu" else []),
        ]
    originals = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    replace_with_bnb_linear(
        model,
        modules_to_not_convert=list(skip),
        quantization_config=bitsandbytes_config(quantization, compute_dtype, skip),
    )
    for name, old in originals.items():
        new = model.get_submodule(name)
        if new is old:  # kept in full precision
            continue
        weight, device = old.weight.detach(), old.weight.device
        if quantization == "4bit":
            new.weight = bnb.nn.Params4bit(weight, requires_grad=False, **new.weight.__dict__).to(device)
        else:  # Int8Params quantises when moved from the CPU
            kwargs = {k: v for k, v in new.weight.__dict__.items() if k != "SCB"}
            new.weight = bnb.nn.Int8Params(weight.to("cpu"), requires_grad=False, **kwargs).to(device)
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.detach(), requires_grad=False)
    setattr(model, f"is_loaded_in_{quantization}", True)  # the flag transformers' bnb loading sets
    return model


def weight_memory(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Bytes of the model's weights as stored (quantised layers with their scales), and what the same model
    takes unquantised in `dtype` (default: its full-precision parameters' dtype)."""
    bnb = import_bitsandbytes()
    quant_types = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt) if bnb is not None else ()
    quantized = {n + "." for n, m in model.named_modules() if quant_types and isinstance(m, quant_types)}
    full = [
        t for k, t in model.state_dict().items() if isinstance(t, torch.Tensor) and not _under(k, quantized)
    ]
    if dtype is None:
        dtype = next((t.dtype for t in full if t.is_floating_point()), torch.float32)
    stored_quantized = sum(
        _nbytes(t)
        for k, t in model.state_dict().items()
        if isinstance(t, torch.Tensor) and _under(k, quantized)
    )
    quantized_params = sum(m.in_features * m.out_features + (m.out_features if m.bias is not None else 0)
                           for n, m in model.named_modules() if n + "." in quantized)  # fmt: skip
    stored_full = sum(_nbytes(t) for t in full)
    return {
        "quantization": quantization_of(model),
        "weight_bytes": stored_full + stored_quantized,
        "quantized_layer_bytes": stored_quantized,
        "quantized_layer_params": quantized_params,
        "unquantized_bytes": stored_full + quantized_params * torch.empty((), dtype=dtype).element_size(),
        "unquantized_dtype": str(dtype).removeprefix("torch."),
    }


def _under(key: str, prefixes: set[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
