"""Build and load VLAs: from a Hugging Face-layout directory or a native training-run directory.

Native run directory (what training writes; the original's layout plus a tokenizer copy):

    run_dir/
      config.json               {"model": {vision_backbone_id, llm_backbone_id, arch_specifier, ...}, ...}
      dataset_statistics.json   {dataset_name: {"action": {q01, q99, mask, ...}, ...}}
      checkpoints/*.pt          {"model": {"vision_backbone": ..., "projector": ..., "llm_backbone": ...}}
      tokenizer/                tokenizer files (the original fetched them from the Hub instead)

Hugging Face directory (the official openvla-7b layout): config.json (with norm_stats),
model.safetensors or sharded model-XXXXX-of-XXXXX.safetensors + model.safetensors.index.json,
preprocessor_config.json and tokenizer files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from prismatic.models.configuration import OpenVLAConfig
from prismatic.models.layouts import hf_to_native, native_to_hf
from prismatic.models.modeling import OpenVLAForActionPrediction
from prismatic.models.processing import PrismaticImageProcessor, PrismaticProcessor
from prismatic.models.quantization import (
    SKIP_MODULES,
    bitsandbytes_config,
    check_quantization,
    cpu_incompatible_layers,
    quantize_,
    require_bitsandbytes,
    weight_memory,
)
from prismatic.models.vision.backbones import VISION_BACKBONES, featurizer_preprocess

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # one of these is needed
HF_REQUIRED = ("config.json", "preprocessor_config.json", "tokenizer_config.json")

# Base-VLM ids of the original's VLA run configs ({"vla": {"base_vlm": ...}}) that we know.
_ORIGINAL_BASE_VLMS = {
    "prism-dinosiglip-224px+7b": dict(
        vision_backbone_id="dinosiglip-vit-so-224px", llm_backbone_id="llama2-7b-pure",
        arch_specifier="no-align+fused-gelu-mlp", image_resize_strategy="resize-naive", llm_max_length=2048,
    ),
    "siglip-224px+7b": dict(
        vision_backbone_id="siglip-vit-so400m", llm_backbone_id="vicuna-v15-7b",
        arch_specifier="no-align+gelu-mlp", image_resize_strategy="letterbox", llm_max_length=2048,
    ),
}  # fmt: skip
# Config fields that are not architecture (kept out of the native `model` section).
_NON_ARCH_FIELDS = ("norm_stats", "auto_map", "architectures", "_name_or_path", "transformers_version", "dtype",
                    "quantization_config")  # fmt: skip


class CheckpointError(FileNotFoundError):
    """A checkpoint directory is incomplete or not in a layout we know."""


def is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (
        (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()
    )


def is_native_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path.suffix == ".pt" and path.parent.name == "checkpoints")


# -- validation ----------------------------------------------------------------------------------
def check_hf_dir(path: Path) -> None:
    """Name every missing file of an HF-layout directory before anything is loaded."""
    missing = [f for f in HF_REQUIRED if not (path / f).is_file()]
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing += [s for s in shards if not (path / s).is_file()]
    elif not (path / "model.safetensors").is_file():
        missing.append("model.safetensors (or model.safetensors.index.json with its shards)")
    if missing:
        raise CheckpointError(
            f"{path} is not a complete Hugging Face-layout checkpoint; missing: {', '.join(missing)}. "
            "Copy the whole model directory (e.g. `huggingface-cli download openvla/openvla-7b --local-dir DIR` "
            "on a machine with internet access)."
        )


def _pick_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted((run_dir / "checkpoints").glob("*.pt"))
    if not ckpts:
        raise CheckpointError(f"{run_dir / 'checkpoints'} has no .pt checkpoint")
    latest = run_dir / "checkpoints" / "latest-checkpoint.pt"
    if latest.is_file():
        return latest
    # Names are for people, but without a 'latest' marker the step in the name is all there is.
    def step(p: Path) -> int:
        m = re.search(r"step-(\d+)", p.name)
        return int(m.group(1)) if m else -1

    return max(ckpts, key=lambda p: (step(p), p.stat().st_mtime))


def _native_arch(run_dir: Path) -> dict[str, Any]:
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"native run directory {run_dir} has no config.json")
    cfg = json.loads(config_path.read_text())
    if "model" in cfg:
        return dict(cfg["model"])
    base = cfg.get("vla", {}).get("base_vlm")
    if base in _ORIGINAL_BASE_VLMS:
        return dict(_ORIGINAL_BASE_VLMS[base])
    raise CheckpointError(
        f"{config_path} has neither a 'model' section nor a known 'vla.base_vlm' (got {base!r}; known: "
        f"{', '.join(_ORIGINAL_BASE_VLMS)})"
    )


# -- building ------------------------------------------------------------------------------------
def build_processor(config: OpenVLAConfig, tokenizer) -> PrismaticProcessor:
    spec = VISION_BACKBONES.get(config.vision_backbone_id)
    preprocess = featurizer_preprocess(spec, config.image_resize_strategy, config.image_sizes[0])
    image_processor = PrismaticImageProcessor.from_preprocess(preprocess, config.image_resize_strategy)
    return PrismaticProcessor(image_processor=image_processor, tokenizer=tokenizer)


def native_config(run_dir: Path) -> OpenVLAConfig:
    arch = _native_arch(run_dir)
    stats_path = run_dir / "dataset_statistics.json"
    if not stats_path.is_file():
        raise CheckpointError(
            f"{run_dir} has no dataset_statistics.json; without it actions cannot be un-normalised "
            "(training writes it next to config.json)"
        )
    return OpenVLAConfig(**arch, norm_stats=json.loads(stats_path.read_text()))


def load_native_state(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    if "model" not in state:
        raise CheckpointError(f"{checkpoint} has no 'model' entry (keys: {sorted(state)})")
    return state["model"]


# -- public API ----------------------------------------------------------------------------------
def load_vla(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    tokenizer: str | Path | None = None,
    quantization_config: Any | None = None,
    quantize: str | None = None,
    decode: str = "auto",
):
    """Load a VLA and its processor from an HF-layout directory or a native run directory / `.pt` file.

    Returns a `prismatic.models.vla.VLA` (model + processor + statistics, with `predict_action`).
    `quantize="8bit"|"4bit"` (HF layout only; `prismatic.models.quantization`) quantises the weights with
    bitsandbytes as they are read, straight onto `device`, and logs the weights' memory before and after;
    `quantization_config` passes a transformers `BitsAndBytesConfig` instead (QLoRA bases do).
    `decode` is the VLA's default decoding path ("auto", "eager", "static", "graphs"; see
    `prismatic.models.decoding`).
    """
    from prismatic.models.decoding import DECODE_MODES
    from prismatic.models.vla import VLA

    if decode not in DECODE_MODES:
        raise ValueError(f"decode={decode!r} is not one of: {', '.join(DECODE_MODES)}")
    if quantize is not None:
        check_quantization(quantize)
        if quantization_config is not None:
            raise ValueError("pass quantize=... or quantization_config=..., not both")
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    if (quantization_config is not None or quantize is not None) and not is_hf_dir(path):
        raise CheckpointError(
            f"quantised loading reads HF-layout checkpoints and {path} is not one: convert it with "
            "vla-scripts/extern/convert_native_to_hf.py"
        )
    if is_hf_dir(path):
        check_hf_dir(path)
        if quantize is not None:
            quantization_config = inference_quantization_config(path, quantize, device, dtype)
        quantized = {} if quantization_config is None else {
            "quantization_config": quantization_config, "device_map": {"": str(torch.device(device))}}  # fmt: skip
        model = OpenVLAForActionPrediction.from_pretrained(path, dtype=dtype or "auto", **quantized)
        processor = PrismaticProcessor.from_pretrained(path)
        if tokenizer is not None:
            processor.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if quantize is not None:
            log_weight_memory(model, dtype)
        return VLA((model if quantized else model.to(device)).eval(), processor, decode=decode)
    if is_native_run_dir(path):
        checkpoint = path if path.suffix == ".pt" else _pick_checkpoint(path)
        run_dir = checkpoint.parents[1]
        config = native_config(run_dir)
        tok_dir = Path(tokenizer) if tokenizer else run_dir / "tokenizer"
        if not tok_dir.is_dir():
            raise CheckpointError(
                f"no tokenizer for {run_dir}: expected {tok_dir} (pass tokenizer=<dir with the LLM's tokenizer files>)"
            )
        state = native_to_hf(load_native_state(checkpoint), config.vision_backbone_id, config.projector_type)
        with torch.device("meta"):
            model = OpenVLAForActionPrediction(config)
        load_state_dict_strict(model, state)
        if dtype is not None:
            model = model.to(dtype)
        processor = build_processor(config, AutoTokenizer.from_pretrained(tok_dir))
        return VLA(model.to(device).eval(), processor, decode=decode)
    raise CheckpointError(
        f"{path} is neither a Hugging Face-layout directory (config.json + *.safetensors) nor a native run "
        "directory (config.json + checkpoints/*.pt) nor a checkpoints/*.pt file"
    )


def inference_quantization_config(path: Path, quantize: str, device: str | torch.device, dtype: torch.dtype | None):
    """The `BitsAndBytesConfig` for `load_vla(quantize=...)`: checks bitsandbytes on `device` first; 4-bit
    layers compute in `dtype` (default: bf16 on CUDA, fp32 elsewhere); on a CPU the layers its kernel cannot
    run stay in full precision (`cpu_incompatible_layers`)."""
    device = torch.device(device)
    require_bitsandbytes(quantize, device)
    compute = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    skip = list(SKIP_MODULES)
    if device.type == "cpu":
        with torch.device("meta"):
            skip += cpu_incompatible_layers(OpenVLAForActionPrediction(OpenVLAConfig.from_pretrained(path)), quantize)
    return bitsandbytes_config(quantize, compute, skip)


def log_weight_memory(model: torch.nn.Module, dtype: torch.dtype | None) -> dict[str, Any]:
    from prismatic.util.logging import get_logger

    mem = weight_memory(model, dtype)
    get_logger(__name__).info(
        "%s weights: %.3f GiB (%.3f GiB unquantised in %s)", mem["quantization"], mem["weight_bytes"] / 2**30,
        mem["unquantized_bytes"] / 2**30, mem["unquantized_dtype"],
    )  # fmt: skip
    return mem


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load (materialising meta tensors) and name every missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]  # fmt: skip
    if missing or unexpected or shapes:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

        raise CheckpointError(
            "checkpoint does not match the model architecture: "
            + "; ".join(
                part
                for part in (
                    f"missing {show(missing)}" if missing else "",
                    f"unexpected {show(unexpected)}" if unexpected else "",
                    f"shape mismatch {show(shapes)}" if shapes else "",
                )
                if part
            )
        )
    model.load_state_dict(state, strict=True, assign=True)
    # Non-persistent buffers (rotary frequencies) are still on meta: let HF's initialiser compute them.
    for module in model.modules():
        if any(b.is_meta for b in module.buffers(recurse=False)):
            module.to_empty(device="cpu", recurse=False)
            model._init_weights(module)


def build_random_on_device(
    config: OpenVLAConfig, device: str | torch.device, dtype: torch.dtype = torch.bfloat16, std: float = 0.02,
    quantize: str | None = None,
) -> OpenVLAForActionPrediction:
    """Full-size architecture with random N(0, std) weights, allocated directly on `device` (no CPU copy
    of a 7B model): for benchmarks and shape/memory checks without a checkpoint. `quantize` ("8bit",
    "4bit") then quantises it in place as loading would (`prismatic.models.quantization.quantize_`)."""
    if quantize is not None:
        check_quantization(quantize)
    with torch.device("meta"):
        model = OpenVLAForActionPrediction(config)
    model = model.to(dtype).to_empty(device=device)  # cast while on meta: no full-precision copy on the device
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
        for module in model.modules():  # non-persistent buffers (rotary frequencies)
            if list(module.buffers(recurse=False)):
                model._init_weights(module)
    if quantize is not None:
        quantize_(model, quantize, dtype)
    return model


def hf_state_to_native(model: OpenVLAForActionPrediction) -> dict[str, dict[str, torch.Tensor]]:
    cfg = model.config
    return hf_to_native(model.state_dict(), cfg.vision_backbone_id, cfg.projector_type)


def native_arch_section(config: OpenVLAConfig) -> dict[str, Any]:
    """The `model` section of a native config.json: the architecture, no statistics."""
    d = config.to_dict()
    for key in _NON_ARCH_FIELDS:
        d.pop(key, None)
    return d
