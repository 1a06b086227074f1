"""Base VLMs for VLA training: find one, check it, load it.

`--vla.base_vlm` takes
- a directory: a Hugging Face-layout checkpoint (openvla-7b), a native run written by our trainer
  (`config.json` with a `model` section + `checkpoints/*.pt` [+ `tokenizer/`]), or a base VLM as the
  prismatic-vlms release ships it (`config.json` {"model": {...}} + `checkpoints/latest-checkpoint.pt`
  holding only `projector` and `llm_backbone`);
- a `.pt` file in such a directory's `checkpoints/`;
- a model id (`prism-dinosiglip-224px+7b`): a directory of that name under `--model_root`
  (default `$PRISMATIC_MODEL_ROOT`), e.g. what `huggingface-cli download TRI-ML/prismatic-vlms
  --include 'prism-dinosiglip-224px+7b/*' --local-dir ROOT` writes.

Native checkpoints load through one path whatever they hold. The architecture comes from the `model`
section: ids fill in the registries' defaults, fields our trainer writes (`text_config`,
`timm_model_kwargs`, `image_sizes`, ...) override them; without a `text_config` the LLM's vocabulary
is the checkpoint's embedding rows. What the checkpoint lacks comes from where the original took it:
the ViT weights from timm's pretrained weights (`prismatic.models.vision.pretrained`, `--vla.vision_weights`),
the tokenizer from `--tokenizer`, else the run's `tokenizer/`, else the LLM's own (bundled for Llama-2,
else the Hugging Face cache or Hub), with the pad token added as the original did.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prismatic.models.configuration import OpenVLAConfig, PrismaticConfig
from prismatic.models.layouts import ACTION_GROUPS, native_to_hf
from prismatic.models.llm.backbones import LLM_BACKBONES, padded_vocab_size
from prismatic.models.llm.loading import default_tokenizer_source, load_tokenizer, tokenizer_problems
from prismatic.models.load import (
    CheckpointError,
    _native_arch,
    _pick_checkpoint,
    build_processor,
    check_hf_dir,
    fresh_action_state,
    is_hf_dir,
    load_state_dict_strict,
    load_vla,
)
from prismatic.models.projectors import PROJECTORS
from prismatic.models.vision.backbones import VISION_BACKBONES
from prismatic.models.vision.pretrained import pretrained_vision_state, vision_weights_problems
from prismatic.util.logging import get_logger

log = get_logger(__name__)

MODEL_ROOT_ENV = "PRISMATIC_MODEL_ROOT"
REQUIRED_GROUPS = ("projector", "llm_backbone")  # a base VLM checkpoint's minimum (the release's content)
# Architecture fields a native `model` section may carry (the release's adds stage recipes, which we drop).
_ARCH_FIELDS = (set(PrismaticConfig.__annotations__) | set(OpenVLAConfig.__annotations__)) - {"model_type"}


class BaseVLMError(CheckpointError):
    """A base VLM that cannot be found or is incomplete; `problems` lists every one."""

    def __init__(self, problems: str | list[str], path: Path | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"base VLM {path} cannot be loaded:\n  - " + "\n  - ".join(self.problems)
        super().__init__(message)


def model_root(explicit: str | Path | None = None) -> Path | None:
    root = explicit if explicit is not None else os.environ.get(MODEL_ROOT_ENV) or None
    return Path(root).expanduser() if root is not None else None


def _models_under(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and (d / "config.json").is_file())


def resolve_base_vlm(spec: str | Path, root: str | Path | None = None) -> Path:
    """The directory or `.pt` file `--vla.base_vlm` names (a path, or a model id under the model root)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    root = model_root(root)
    if len(path.parts) != 1:  # a path with directories: not an id
        raise BaseVLMError(f"--vla.base_vlm={str(spec)!r} does not exist")
    if root is None:
        raise BaseVLMError(
            f"--vla.base_vlm={str(spec)!r} is neither a path nor a model id under a model root: pass the "
            f"directory, or --model_root DIR (or set {MODEL_ROOT_ENV}) where DIR/{spec}/ holds the model"
        )
    if (root / path).exists():
        return root / path
    if not root.is_dir():
        raise BaseVLMError(f"the model root {root} (--model_root or {MODEL_ROOT_ENV}) is not a directory")
    models = _models_under(root)
    there = f"it holds: {', '.join(models)}" if models else "it holds no model directory (one with a config.json)"
    raise BaseVLMError(f"base VLM {str(spec)!r} is not under the model root {root}; {there}")


@dataclass
class BaseVLMPlan:
    """A base VLM's parts, found and checked before anything is built."""

    path: Path
    hf: bool = False
    checkpoint: Path | None = None
    arch: dict[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()  # weight groups in the native checkpoint
    tokenizer: Path | str | None = None

    @property
    def needs_vision_weights(self) -> bool:
        return not self.hf and "vision_backbone" not in self.groups


def _tokenizer_source(run_dir: Path, llm_backbone_id: str, explicit: Path | None) -> Path | str:
    if explicit is not None:
        return Path(explicit)
    if (run_dir / "tokenizer").is_dir():
        return run_dir / "tokenizer"
    return default_tokenizer_source(LLM_BACKBONES.get(llm_backbone_id))


def _read_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's `model` entry, memory-mapped (tensors are read when used)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated / not a torch zip file / pickled objects
        raise BaseVLMError(f"cannot read {checkpoint}: {e}") from e
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise BaseVLMError(f"{checkpoint} has no 'model' entry (expected {{'model': {{'projector', 'llm_backbone', ...}}}})")
    return state["model"]


def plan_base_vlm(
    spec: str | Path,
    root: str | Path | None = None,
    tokenizer: Path | None = None,
    vision_weights: Path | None = None,
) -> BaseVLMPlan:
    """Find every part of a base VLM; raise `BaseVLMError` listing all that is missing or wrong."""
    path = resolve_base_vlm(spec, root)
    if path.is_dir() and is_hf_dir(path):
        check_hf_dir(path)
        return BaseVLMPlan(path, hf=True, tokenizer=tokenizer)
    if path.is_file() and (path.suffix != ".pt" or path.parent.name != "checkpoints"):
        raise BaseVLMError(f"{path} is a file but not a checkpoints/*.pt file of a run directory")
    if path.is_dir() and not (path / "checkpoints").is_dir():
        raise BaseVLMError(
            f"{path} is neither a Hugging Face-layout directory (config.json + *.safetensors) nor a native one "
            "(config.json + checkpoints/*.pt, as the prismatic-vlms release and our trainer write)"
        )
    checkpoint = path if path.is_file() else _pick_checkpoint(path)
    run_dir = checkpoint.parents[1]
    arch = _native_arch(run_dir)  # raises if config.json is missing or has no architecture
    if _vlm_stage(run_dir) == "align":
        raise BaseVLMError(
            f"{run_dir} is an align-stage VLM run: only its projector was trained, its LLM is the untouched one. "
            f"Run the finetune stage from it first (vla-scripts/pretrain_vlm.py --stage finetune --pretrained_checkpoint "
            f"{run_dir}) and pass that run as --vla.base_vlm"
        )
    problems = []
    for key, registry in (("vision_backbone_id", VISION_BACKBONES), ("llm_backbone_id", LLM_BACKBONES)):
        if arch.get(key) not in registry:
            problems.append(f"{run_dir / 'config.json'}: model.{key}={arch.get(key)!r} is not one of {', '.join(registry)}")
    if str(arch.get("arch_specifier", "")).split("+")[-1] not in PROJECTORS:
        problems.append(f"{run_dir / 'config.json'}: model.arch_specifier={arch.get('arch_specifier')!r} names no "
                        f"projector ({', '.join(PROJECTORS)})")  # fmt: skip
    if problems:
        raise BaseVLMError(problems, path)
    groups = tuple(_read_checkpoint(checkpoint))
    missing = [g for g in REQUIRED_GROUPS if g not in groups]
    if missing:
        problems.append(f"{checkpoint} has no {' or '.join(missing)} weights (it holds: {', '.join(groups) or 'nothing'})")
    plan = BaseVLMPlan(path, checkpoint=checkpoint, arch=arch, groups=groups,
                       tokenizer=_tokenizer_source(run_dir, arch["llm_backbone_id"], tokenizer))  # fmt: skip
    if plan.needs_vision_weights:  # the release keeps the ViTs out: timm's pretrained weights, as the original
        problems += vision_weights_problems(arch["vision_backbone_id"], vision_weights, arch.get("timm_model_ids"))
    problems += tokenizer_problems(plan.tokenizer)
    if problems:
        raise BaseVLMError(problems, path)
    return plan


def _vlm_stage(run_dir: Path) -> str | None:
    """The stage of a VLM run written by `prismatic.vlm` (config.json "task": "vlm"), else None."""
    try:
        record = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return record.get("stage") if isinstance(record, dict) and record.get("task") == "vlm" else None


def base_vlm_problems(spec, root=None, tokenizer=None, vision_weights=None) -> list[str]:
    """`plan_base_vlm`'s complaints as a list (empty: loadable), for configuration validation."""
    try:
        plan_base_vlm(spec, root, tokenizer, vision_weights)
    except BaseVLMError as e:
        return [f"--vla.base_vlm: {p}" for p in e.problems]
    except CheckpointError as e:
        return [f"--vla.base_vlm: {e}"]
    return []


def _config(arch: dict[str, Any], tokenizer, embedding_rows: int) -> OpenVLAConfig:
    fields = {k: v for k, v in arch.items() if k in _ARCH_FIELDS}
    llm = LLM_BACKBONES.get(fields["llm_backbone_id"])
    fields.setdefault("pad_token_id", tokenizer.pad_token_id)
    fields.setdefault("action_vocab_size", tokenizer.vocab_size)  # the original's action bins: its base vocabulary
    if "empty_token_before_actions" not in fields:
        from prismatic.data.torch_dataset import has_empty_piece

        fields["empty_token_before_actions"] = has_empty_piece(tokenizer, llm.empty_token_id)
    if fields.get("text_config") is None:  # the release: the registry's architecture, the checkpoint's rows
        fields["text_config"] = llm.text_config(vocab_size=embedding_rows, pad_token_id=fields["pad_token_id"]).to_dict()
    fields["norm_stats"] = fields.get("norm_stats") or {}
    return OpenVLAConfig(**fields)


def _embedding_rows(llm_state: dict[str, torch.Tensor], checkpoint: Path) -> int:
    keys = [k for k in llm_state if k.endswith("embed_tokens.weight")]
    if len(keys) != 1:
        raise BaseVLMError(f"{checkpoint}: cannot find the LLM's input embeddings (a '*embed_tokens.weight' tensor)")
    return int(llm_state[keys[0]].shape[0])


def load_base_vlm(
    spec: str | Path,
    root: str | Path | None = None,
    tokenizer: Path | None = None,
    vision_weights: Path | None = None,
    dtype: torch.dtype = torch.float32,
    head_settings: dict[str, Any] | None = None,
):
    """A base VLM as a `VLA` (model + processor) to start VLA training from; see the module docstring.

    `head_settings` (action head, chunk, cameras, proprio: `VLAConfig.head_settings()`) override the base's;
    a head or proprio projector the base has no weights for starts freshly initialised."""
    from prismatic.models.vla import VLA

    head_settings = head_settings or {}
    plan = plan_base_vlm(spec, root, tokenizer, vision_weights)
    if plan.hf:
        log.info(f"base VLM: Hugging Face-layout checkpoint {plan.path}")
        return load_vla(plan.path, tokenizer=tokenizer, new_action_modules=True, **head_settings)
    arch = plan.arch
    vision = "timm pretrained weights" if plan.needs_vision_weights else "the checkpoint"
    if vision_weights is not None and not plan.needs_vision_weights:
        log.info(f"--vla.vision_weights {vision_weights} is not used: {plan.checkpoint} holds the ViTs")
    log.info(f"base VLM: {arch['vision_backbone_id']} + {arch['llm_backbone_id']} from {plan.checkpoint} "
             f"(ViTs from {vision}, tokenizer from {plan.tokenizer})")  # fmt: skip
    tok = load_tokenizer(arch["llm_backbone_id"], plan.tokenizer, int(arch.get("llm_max_length", 2048)))
    state = _read_checkpoint(plan.checkpoint)
    rows = _embedding_rows(state["llm_backbone"], plan.checkpoint)
    multiple = int(arch.get("pad_to_multiple_of", 64))
    if len(tok) > rows or padded_vocab_size(len(tok), multiple) != rows:
        raise BaseVLMError(
            f"the tokenizer from {plan.tokenizer} has {len(tok)} tokens (pad token included), which the original "
            f"pads to {padded_vocab_size(len(tok), multiple)} embedding rows, but {plan.checkpoint}'s LLM has {rows}: "
            f"pass the tokenizer of {arch['llm_backbone_id']} with --tokenizer DIR"
        )
    config = _config({**arch, **head_settings}, tok, rows)
    groups = {k: v for k, v in state.items() if k in ACTION_GROUPS}  # a VLA run's own head, if it is the base
    weights = native_to_hf({"vision_backbone": state.get("vision_backbone", {}), "projector": state["projector"],
                            "llm_backbone": state["llm_backbone"], **groups}, config.vision_backbone_id, config.projector_type)  # fmt: skip
    weights = {**fresh_action_state(config), **weights}  # a new head / proprio projector: initial weights
    if plan.needs_vision_weights:
        weights.update(pretrained_vision_state(config, vision_weights))
    from prismatic.models.modeling import OpenVLAForActionPrediction

    with torch.device("meta"):
        model = OpenVLAForActionPrediction(config)
    load_state_dict_strict(model, weights)
    return VLA(model.to(dtype), build_processor(config, tok))
