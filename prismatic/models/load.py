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
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from prismatic.models.configuration import OpenVLAConfig
from prismatic.models.errors import CheckpointError  # noqa: F401  (raised here; importable from here)
from prismatic.models.layouts import native_to_hf
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
from prismatic.models.vla import VLA

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # one of these is needed
MODEL_TYPES = ("openvla", "prismatic")  # config.json model_type values we load (no remote code)
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
    shards = ["model.safetensors"]
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is damaged ({type(e).__name__}: {e}); copy it again") from e
        missing += [s for s in shards if not (path / s).is_file()]
    elif not (path / "model.safetensors").is_file():
        missing.append("model.safetensors (or model.safetensors.index.json with its shards)")
    if missing:
        raise CheckpointError(
            f"{path} is not a complete Hugging Face-layout checkpoint; missing: {', '.join(missing)}. "
            "Copy the whole model directory (e.g. `huggingface-cli download openvla/openvla-7b --local-dir DIR` "
            "on a machine with internet access)."
        )
    check_hf_config(path / "config.json")
    for shard in shards:
        check_safetensors_file(path / shard)


def check_hf_config(config_path: Path) -> dict[str, Any]:
    """Refuse a config.json that is not an OpenVLA / Prismatic one before transformers reads it (without
    `model_type`, transformers falls back to the `auto_map` and asks whether to run remote code)."""
    try:
        cfg = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path} is not valid JSON ({e}): the file is damaged; copy it again") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{config_path} holds a {type(cfg).__name__}, not a JSON object: the file is damaged")
    model_type = cfg.get("model_type")
    if model_type not in MODEL_TYPES:
        what = "has no 'model_type'" if model_type is None else f"has model_type {model_type!r}"
        raise CheckpointError(
            f"{config_path} {what}; prismatic loads model_type one of: {', '.join(MODEL_TYPES)} (OpenVLA checkpoints "
            'have "model_type": "openvla"). Is this an OpenVLA / Prismatic checkpoint? (No remote code is run.)'
        )
    if cfg.get("norm_stats") is not None:
        check_norm_stats(cfg["norm_stats"], f"{config_path} norm_stats")
    return cfg


def check_norm_stats(stats: Any, source: str) -> None:
    """Dataset statistics must map dataset names to {"action": {q01, q99 | mean, std, ...}, ...}."""
    if not isinstance(stats, Mapping):
        raise CheckpointError(
            f"{source} is a {type(stats).__name__}, not a mapping of dataset name -> statistics "
            '(e.g. {"bridge_orig": {"action": {"q01": [...], "q99": [...], ...}}}): the file is damaged or was edited'
        )
    for name, entry in stats.items():
        action = entry.get("action") if isinstance(entry, Mapping) else None
        if not isinstance(action, Mapping) or not (
            {"q01", "q99"} <= set(action) or {"mean", "std"} <= set(action) or {"min", "max"} <= set(action)
        ):
            raise CheckpointError(
                f"{source}[{name!r}] has no action statistics (expected {{\"action\": {{\"q01\": [...], \"q99\": [...], ...}}}}, "
                f"got {str(entry)[:120]!r})"
            )


def check_safetensors_file(path: Path) -> None:
    """A safetensors file holds an 8-byte header length, a JSON header and the tensor bytes the header's offsets
    cover; a shorter file is an interrupted download or copy. Checked from the header alone (no tensor read)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = json.loads(f.read(n)) if 0 < n <= size - 8 else None
        if not isinstance(header, dict):
            raise ValueError("no readable header")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path} is incomplete or not a safetensors file ({size} bytes, {e}): download or copy it again"
        ) from e
    expected = 8 + n + end
    if size != expected:
        state = "is incomplete" if size < expected else "has extra bytes"
        raise CheckpointError(
            f"{path} {state}: {size} bytes where its header describes {expected} (an interrupted download or copy?); "
            "download or copy it again"
        )


def _checkpoint_candidates(run_dir: Path) -> list[Path]:
    """The run's weight files, the one to load first first: latest-checkpoint.pt, else by step, newest first."""
    ckpts = sorted((run_dir / "checkpoints").glob("*.pt"))
    if not ckpts:
        raise CheckpointError(f"{run_dir / 'checkpoints'} has no .pt checkpoint")

    # Names are for people, but without a 'latest' marker the step in the name is all there is.
    def step(p: Path) -> int:
        m = re.search(r"step-(\d+)", p.name)
        return int(m.group(1)) if m else -1

    ordered = sorted(ckpts, key=lambda p: (step(p), p.stat().st_mtime), reverse=True)
    latest = run_dir / "checkpoints" / "latest-checkpoint.pt"
    return [latest] + [p for p in ordered if p != latest] if latest.is_file() else ordered


def _pick_checkpoint(run_dir: Path) -> Path:
    return _checkpoint_candidates(run_dir)[0]


def _load_newest_readable(run_dir: Path) -> tuple[Path, dict[str, dict[str, torch.Tensor]]]:
    """The newest weight file of a run that reads; damaged newer ones are named in a warning and skipped."""
    problems = []
    for checkpoint in _checkpoint_candidates(run_dir):
        try:
            state = load_native_state(checkpoint)
        except CheckpointError as e:
            log.warning("skipping %s", e)
            problems.append(str(e))
            continue
        if problems:
            log.warning("loading the older %s instead", checkpoint)
        return checkpoint, state
    raise CheckpointError(f"no readable weights under {run_dir / 'checkpoints'}: {'; '.join(problems)}")


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


def fresh_action_state(config: OpenVLAConfig) -> dict[str, torch.Tensor]:
    """Initial weights of the action head and proprio projector (PyTorch's default init, as the model's)."""
    from prismatic.models.heads import ACTION_HEADS
    from prismatic.models.projectors import ProprioProjector

    modules = {"action_head": ACTION_HEADS.get(config.action_head)(config)}
    if config.proprio_dim:
        modules["proprio_projector"] = ProprioProjector(config.proprio_dim, config.text_config.hidden_size)
    return {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}


def _check_action_modules(model: OpenVLAForActionPrediction, path: Path, new_ok: bool) -> None:
    """The head and proprio projector must have come from the checkpoint, unless a new one is wanted."""
    from prismatic.models import oft

    names = oft.checkpoint_tensor_names(path)
    absent = [name for name in oft.COMPONENTS if getattr(model, name) is not None
              and any(f"{name}.{k}" not in names for k in getattr(model, name).state_dict())
              and oft.component_file(path, name) is None]  # fmt: skip
    if absent and not new_ok:
        raise CheckpointError(
            f"{path} has no weights for the model's {', '.join(absent)} ({model.config.action_head!r} head, proprio_dim="
            f"{model.config.proprio_dim}): neither in its safetensors nor as an OpenVLA-OFT <name>--<step>_checkpoint.pt. "
            "Check the action_head / proprio_dim settings, or pass new_action_modules=True to start them fresh (training)"
        )


def native_config(run_dir: Path, **overrides: Any) -> OpenVLAConfig:
    arch = {**_native_arch(run_dir), **overrides}
    stats_path = run_dir / "dataset_statistics.json"
    if not stats_path.is_file():
        raise CheckpointError(
            f"{run_dir} has no dataset_statistics.json; without it actions cannot be un-normalised "
            "(training writes it next to config.json)"
        )
    try:
        stats = json.loads(stats_path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{stats_path} is not valid JSON ({e}): the file is damaged") from e
    check_norm_stats(stats, str(stats_path))
    return OpenVLAConfig(**arch, norm_stats=stats)


def load_native_state(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # zip, unpickling and struct errors that would not name the file
        raise CheckpointError(
            f"{checkpoint} is incomplete or corrupt ({type(e).__name__}: {str(e)[:200]}); use another checkpoint "
            "of the run, or convert/copy it again"
        ) from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{checkpoint} has no 'model' entry (keys: {sorted(state) if isinstance(state, dict) else type(state).__name__})")
    return state["model"]


# -- public API ----------------------------------------------------------------------------------
HEAD_SETTINGS = ("action_head", "chunk_len", "cameras", "proprio_dim", "action_dim")


def load_vla(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    tokenizer: str | Path | None = None,
    quantization_config: Any | None = None,
    quantize: str | None = None,
    decode: str = "auto",
    *,
    action_head: str | None = None,
    chunk_len: int | None = None,
    cameras: list[str] | tuple[str, ...] | None = None,
    proprio_dim: int | None = None,
    action_dim: int | None = None,
    new_action_modules: bool = False,
):
    """Load a VLA and its processor from an HF-layout directory or a native run directory / `.pt` file.

    Returns a `prismatic.models.vla.VLA` (model + processor + statistics, with `predict_chunks`).
    `quantize="8bit"|"4bit"` (HF layout only; `prismatic.models.quantization`) quantises the weights with
    bitsandbytes as they are read, straight onto `device`, and logs the weights' memory before and after;
    `quantization_config` passes a transformers `BitsAndBytesConfig` instead (QLoRA bases do).
    `decode` is the VLA's default decoding path for token heads ("auto", "eager", "static", "graphs"; see
    `prismatic.models.decoding`).

    `action_head`, `chunk_len`, `cameras`, `proprio_dim`, `action_dim` override the checkpoint's action
    formulation (None: as recorded; `prismatic.models.oft.OFT_LIBERO` holds the OpenVLA-OFT LIBERO releases'
    values, which no file records). An OpenVLA-OFT release directory's head and proprio projector are read
    from its `*--<step>_checkpoint.pt` files. A head or projector without weights is an error unless
    `new_action_modules` (fine-tuning a new head on a base VLM): then it starts freshly initialised.
    """
    from prismatic.models import oft
    from prismatic.models.decoding import DECODE_MODES

    if decode not in DECODE_MODES:
        raise ValueError(f"decode={decode!r} is not one of: {', '.join(DECODE_MODES)}")
    if quantize is not None:
        check_quantization(quantize)
        if quantization_config is not None:
            raise ValueError("pass quantize=... or quantization_config=..., not both")
    overrides = {k: v for k, v in dict(action_head=action_head, chunk_len=chunk_len, proprio_dim=proprio_dim,
                                       action_dim=action_dim, cameras=list(cameras) if cameras else None).items()
                 if v is not None}  # fmt: skip
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
        if "action_head" not in overrides and oft.has_release_components(path):
            recorded = json.loads((path / "config.json").read_text()).get("action_head", "bins")
            if recorded == "bins":
                raise CheckpointError(oft.settings_hint(path))
        quantized = {} if quantization_config is None else {
            "quantization_config": quantization_config, "device_map": {"": str(torch.device(device))}}  # fmt: skip
        model = OpenVLAForActionPrediction.from_pretrained(path, dtype=dtype or "auto", **quantized, **overrides)
        _check_action_modules(model, path, new_action_modules)
        processor = PrismaticProcessor.from_pretrained(path)
        if tokenizer is not None:
            processor.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if quantize is not None:
            log_weight_memory(model, dtype)
        return VLA((model if quantized else model.to(device)).eval(), processor, decode=decode)
    if is_native_run_dir(path):
        run_dir = path.parents[1] if path.suffix == ".pt" else path
        config = native_config(run_dir, **overrides)
        tok_dir = Path(tokenizer) if tokenizer else run_dir / "tokenizer"
        if not tok_dir.is_dir():
            raise CheckpointError(
                f"no tokenizer for {run_dir}: expected {tok_dir} (pass tokenizer=<dir with the LLM's tokenizer files>)"
            )
        native = load_native_state(path) if path.suffix == ".pt" else _load_newest_readable(path)[1]
        state = native_to_hf(native, config.vision_backbone_id, config.projector_type)
        if new_action_modules:  # a new head / projector starts from its initial weights
            state = {**fresh_action_state(config), **state}
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
