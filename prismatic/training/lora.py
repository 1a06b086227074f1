"""LoRA through peft: the only place that wraps a model with adapters, saves them and merges them.

QLoRA (`--lora.quantization 4bit|8bit`). The base checkpoint is loaded through transformers' bitsandbytes
integration with `quantization_config(...)`: as the weights are read, every Linear layer of the vision
backbone and the LLM becomes a bitsandbytes `Linear4bit` (NF4, double quantisation of the scales) or
`Linear8bitLt` (LLM.int8). The projector and the LM head stay in full precision (`SKIP_MODULES`).
`wrap_with_lora` then freezes the base, casts the remaining non-quantised parameters (norms,
embeddings, projector, head) to fp32 (peft's `prepare_model_for_kbit_training`) and adds the adapters.

[Contract] Adapters are named by module path only (`...q_proj.lora_A.weight`), never by the quantised
base layer, so an adapter trained on a quantised base loads and merges onto the full-precision base:
`merge_adapter` always reads the base un-quantised.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from pathlib import Path

import torch
import torch.nn as nn

from prismatic.models.quantization import SKIP_MODULES, bitsandbytes_config, import_bitsandbytes  # noqa: F401
from prismatic.training.config import LoRAConfig

ACTION_MODULES = ("action_head", "proprio_projector")  # a VLA's own modules: trained in full, not adapted

_BNB_MISSING = (
    "--lora.quantization {q} needs bitsandbytes >= 0.48 (QLoRA): it is in the `train` extra on Linux "
    "(uv sync --extra train); elsewhere `uv pip install 'bitsandbytes>=0.48'` where a wheel exists for your platform. "
    "Or fine-tune without quantisation (drop --lora.quantization)."
)


def _require_peft():
    import_bitsandbytes()  # peft imports it when installed; keep its import quiet (see above)
    try:
        import peft
    except ImportError as e:
        raise ImportError("LoRA needs peft, from the `train` extra: uv sync --extra train") from e
    return peft


def check_quantized_training(quantization: str, device: torch.device | str) -> None:
    """Fail early, before any model is built, if bitsandbytes is missing or cannot train `quantization`
    layers on `device`: runs one forward and backward through a small quantised layer there."""
    bnb = import_bitsandbytes()
    if bnb is None:
        raise ImportError(_BNB_MISSING.format(q=quantization))
    device = torch.device(device)
    try:
        with torch.enable_grad():
            _train_one_step(bnb, quantization, device)
    except Exception as e:
        raise RuntimeError(
            f"--lora.quantization {quantization}: bitsandbytes {bnb.__version__} cannot train {quantization} layers on "
            f"device {device.type!r} ({type(e).__name__}: {e}). bitsandbytes supports CUDA and CPU (x86-64, aarch64); "
            "pick one with --device, or drop --lora.quantization to fine-tune the full-precision base."
        ) from e


def _train_one_step(bnb, quantization: str, device: torch.device) -> None:
    if quantization == "4bit":
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
    else:
        layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
    layer.load_state_dict(nn.Linear(64, 64).state_dict())
    layer = layer.to(device).train()  # bitsandbytes quantises when the weight reaches its device
    x = torch.randn(4, 64, device=device, requires_grad=True)
    layer(x).sum().backward()
    if x.grad is None or not torch.isfinite(x.grad).all():
        raise RuntimeError("no finite input gradient through the quantised layer")


def quantization_config(quantization: str, device: torch.device | str, mixed_precision: bool = True):
    """transformers' `BitsAndBytesConfig` for loading the base quantised (`load_vla(quantization_config=...)`).

    4bit: NF4 with double quantisation (the QLoRA recipe); compute in bf16 on CUDA with mixed precision,
    else fp32. 8bit: LLM.int8 (outlier columns above 6.0 kept in 16 bit). Checks the device first.
    """
    if quantization not in ("4bit", "8bit"):
        raise ValueError(f"--lora.quantization={quantization!r} is not one of: 4bit, 8bit")
    check_quantized_training(quantization, device)
    compute = torch.bfloat16 if torch.device(device).type == "cuda" and mixed_precision else torch.float32
    return bitsandbytes_config(quantization, compute)


def wrap_with_lora(
    model: nn.Module, cfg: LoRAConfig, full_modules: tuple[str, ...] = ACTION_MODULES, frozen_modules: tuple[str, ...] = ()
) -> nn.Module:
    """Freeze the model and add rank-`cfg.rank` adapters to its linear layers (all of them by default, but
    not the LM head (peft's all-linear) nor layers outside the forward). `full_modules` (top-level names; a
    VLA's head and proprio projector by default) train in full instead; `frozen_modules` get no adapters.

    With `cfg.quantization` the model must have been loaded quantised (`quantization_config`); it is first
    prepared for k-bit training: base frozen, non-quantised parameters in fp32. No input-gradient hook is
    needed for activation checkpointing: ours is non-reentrant (`distributed.apply_activation_checkpointing`).
    """
    peft = _require_peft()
    if cfg.quantization is not None:
        if not getattr(model, f"is_loaded_in_{cfg.quantization}", False):  # set by transformers' bnb loading
            raise ValueError(
                f"--lora.quantization {cfg.quantization} but the model was not loaded {cfg.quantization}: "
                "load it with load_vla(..., quantization_config=quantization_config(...)) (as model_setup does)"
            )
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = cfg.target_modules if cfg.target_modules == "all-linear" else [t.strip() for t in cfg.target_modules.split(",")]
    # The action head and proprio projector train in full, as OpenVLA-OFT's (saved with the adapter).
    full = [name for name in full_modules if any(p.numel() for p in getattr(getattr(model, name, None), "parameters", list)())]
    inside = [n for n, _ in model.named_modules() if any(n == f or n.startswith(f + ".") for f in (*full, *frozen_modules))]
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                             exclude_modules=(_modules_outside_the_forward(model) + inside) or None,
                             modules_to_save=full or None, init_lora_weights="gaussian")  # fmt: skip
    return peft.get_peft_model(model, config)


def _modules_outside_the_forward(model: nn.Module) -> list[str]:
    """Names of the modules the forward never runs (each ViT's blocks after the one features are read from,
    its final norm and head) and of everything inside them: adapters there would get no gradient (and
    make DDP wait for one)."""
    vision = getattr(model, "vision_backbone", None)
    unused = {id(m) for m in vision.unused_modules()} if vision is not None else set()
    roots = tuple(name for name, m in model.named_modules() if id(m) in unused)
    inside = tuple(r + "." for r in roots)
    return [name for name, _ in model.named_modules() if name in roots or name.startswith(inside)]


FINGERPRINT_SAMPLE = 256  # leading values of every tensor that enter a base checkpoint's fingerprint
ADAPTER_FILE = "adapter_model.safetensors"


def _base_tensors(base: Path):
    """(HF name, tensor holding at least the first FINGERPRINT_SAMPLE values) of every weight of a base
    checkpoint, read from its files (HF layout: a few rows per tensor; native run: the memory-mapped .pt)."""
    from prismatic.models.load import (
        _native_arch,
        _pick_checkpoint,
        is_hf_dir,
        load_native_state,
        native_to_hf,
    )
    from prismatic.models.projectors import projector_type

    if is_hf_dir(base):
        from safetensors import safe_open

        index = base / "model.safetensors.index.json"
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
        for shard in shards:
            with safe_open(base / shard, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    sl = f.get_slice(name)
                    shape = sl.get_shape()
                    if not shape:
                        yield name, f.get_tensor(name)
                        continue
                    rows = math.ceil(FINGERPRINT_SAMPLE / max(1, math.prod(shape[1:])))
                    yield name, sl[:rows]
        return
    checkpoint = base if base.suffix == ".pt" else _pick_checkpoint(base)
    arch = _native_arch(checkpoint.parents[1])
    state = native_to_hf(load_native_state(checkpoint), arch["vision_backbone_id"], projector_type(arch["arch_specifier"]))
    yield from state.items()


def base_fingerprint(base: str | Path) -> str:
    """SHA-256 over the name, dtype, shape and first FINGERPRINT_SAMPLE values of every tensor of a base
    checkpoint, read from its files (a quantised model in memory would not do). The HF and native layouts of
    the same weights give the same fingerprint; other weights (another fine-tune, a merged adapter) another."""
    entries = []
    for name, tensor in _base_tensors(Path(base)):
        head = tensor.reshape(-1)[:FINGERPRINT_SAMPLE].contiguous()
        entries.append((name, str(tensor.dtype), head.view(torch.uint8).numpy().tobytes()))
    h = hashlib.sha256()
    for name, dtype, data in sorted(entries):
        h.update(f"{name}|{dtype}|".encode())
        h.update(data)
    return h.hexdigest()


def check_adapter_base(adapter_dir: Path, base_dir: Path) -> None:
    """Refuse to merge an adapter into a base other than the one it was trained on (recorded at training time
    in the adapter file's metadata; adapters from elsewhere carry none, and are merged with a warning)."""
    from safetensors import safe_open

    with safe_open(Path(adapter_dir) / ADAPTER_FILE, framework="pt") as f:
        meta = f.metadata() or {}
    recorded = meta.get("prismatic_base_fingerprint")
    if recorded is None:
        logging.getLogger(__name__).warning(
            "%s records no base checkpoint (not trained by prismatic): cannot check it was trained on %s", adapter_dir, base_dir
        )
        return
    if base_fingerprint(base_dir) != recorded:
        from prismatic.util.errors import UserError

        raise UserError(
            f"the adapter in {adapter_dir} was trained on another base ({meta.get('prismatic_base_path', '?')}) than "
            f"{base_dir}: their weights differ. Pass the --base_dir the run fine-tuned (its --vla.base_vlm)"
        )


def run_head_settings(run_dir: str | Path) -> dict:
    """The action formulation a run trained (from the `model` section of its config.json)."""
    from prismatic.models.configuration import OpenVLAConfig

    model = json.loads((Path(run_dir) / "config.json").read_text()).get("model", {})
    return {k: model[k] for k in OpenVLAConfig.CONTRACT_FIELDS if k in model}


def save_adapter(
    model: nn.Module, trainable_state: dict[str, torch.Tensor], out_dir: Path, base: tuple[str, str] | None = None
) -> None:
    """Adapters only (a few MB), in peft's layout, from the gathered trainable parameters (rank 0;
    `CheckpointManager.trainable_state`, named without wrappers).

    peft picks the adapter entries by the model's own module names, which include activation
    checkpointing's `_checkpoint_wrapped_module`; so it is given those names, and the saved keys are
    then stripped of them, to load onto an unwrapped base. (`PeftModel.save_pretrained` would select
    again by wrapped names and drop every adapter inside a checkpointed layer.) `base`: (path, fingerprint)
    of the base checkpoint, recorded in the file's metadata for `merge_adapter` to check."""
    peft = _require_peft()
    from safetensors.torch import save_file

    from prismatic.training.distributed import parameter_name

    names = {n: parameter_name(n) for n, _ in model.named_parameters()}
    as_named = {n: trainable_state[clean] for n, clean in names.items() if clean in trainable_state}
    adapter = peft.get_peft_model_state_dict(model, state_dict=as_named)
    adapter = {parameter_name(k): v.contiguous() for k, v in adapter.items()}
    config = copy.copy(model.peft_config["default"])
    config.inference_mode = True  # what peft writes for a saved adapter
    out_dir = Path(out_dir)
    config.save_pretrained(out_dir)
    metadata = {"format": "pt"}
    if base is not None:
        metadata.update(prismatic_base_path=str(base[0]), prismatic_base_fingerprint=base[1])
    save_file(adapter, out_dir / ADAPTER_FILE, metadata=metadata)


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, dataset_statistics: Path | None = None,
                  head_settings: dict | None = None):  # fmt: skip
    """Base HF-layout checkpoint + adapter -> a merged HF-layout checkpoint (loads with the Auto classes).

    The base is always read in full precision, also for adapters trained on a quantised base (QLoRA):
    the merged weights are base + B @ A in the base's dtype, not a de-quantised copy. `head_settings`
    (the run's action head, chunk, cameras, proprio: `run_head_settings`) rebuild the fine-tuned model's
    head and proprio projector, whose weights the adapter holds in full. Refuses an `out_dir` that is an
    input, and a base other than the one the adapter was trained on, before loading anything."""
    peft = _require_peft()
    from prismatic.models.load import load_vla
    from prismatic.util.cli import check_output_dir

    check_output_dir(out_dir, base_dir=base_dir, adapter_dir=adapter_dir)
    check_adapter_base(Path(adapter_dir), Path(base_dir))
    vla = load_vla(base_dir, new_action_modules=True, **(head_settings or {}))
    merged = peft.PeftModel.from_pretrained(vla.model, str(adapter_dir)).merge_and_unload()
    vla.model = merged
    if dataset_statistics is not None:
        vla.model.config.norm_stats = json.loads(Path(dataset_statistics).read_text())
    with torch.no_grad():
        vla.save_pretrained(out_dir)
    return vla
