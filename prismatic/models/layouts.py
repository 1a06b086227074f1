"""The two checkpoint layouts and the one mapping between them (used by loading, saving and training).

- Hugging Face layout (what `save_pretrained` writes, as in the official openvla-7b repository):
  flat names `vision_backbone.featurizer.*`, `vision_backbone.fused_featurizer.*`,
  `projector.fc{1,2,3}.*`, `language_model.{model,lm_head}.*`; LayerScale as `ls1.scale_factor`.
- Native training layout (the `.pt` files under a run's `checkpoints/`):
  `{"model": {"vision_backbone": {...}, "projector": {...}, "llm_backbone": {...}}}` with the
  original's names: `dino_featurizer.*` / `siglip_featurizer.*` (or `featurizer.*` for a single
  ViT), LayerScale as `ls1.gamma`, the projector's `nn.Sequential` under its attribute name
  (`projector.0.*`, `projector.2.*`, `projector.4.*`; `projector.weight` for the linear one: the
  original saves `vlm.projector.state_dict()`), and the LLM under `llm.*`. Projector keys without the
  `projector.` prefix (what this project wrote before) are read too. A VLA's action head and proprio
  projector (if they have weights) sit under `action_head` / `proprio_projector` with their HF-layout names.

Both directions are pure renames (no tensor is touched), so a round trip is bit-identical.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from prismatic.models.vision.backbones import VISION_BACKBONES

if TYPE_CHECKING:
    from prismatic.models.configuration import OpenVLAConfig
    from prismatic.models.modeling import OpenVLAForActionPrediction

# Native names of each featurizer, by backbone family (the original's attribute names).
_NATIVE_FEATURIZER_NAMES = {
    "dinosiglip": ("dino_featurizer", "siglip_featurizer"),
    "dinoclip": ("dino_featurizer", "clip_featurizer"),
}
_HF_FEATURIZER_NAMES = ("featurizer", "fused_featurizer")
# Projector: HF submodule -> position in the native nn.Sequential (activations sit between), which the
# original's projector modules hold as their `projector` attribute.
_PROJECTOR_NATIVE = {"fc1": "0", "fc2": "2", "fc3": "4"}
_PROJECTOR_PREFIX = "projector."
# Config fields that are not architecture (kept out of the native `model` section).
NON_ARCH_FIELDS = ("norm_stats", "auto_map", "architectures", "_name_or_path", "transformers_version", "dtype",
                   "quantization_config")  # fmt: skip
# A VLA's own modules (prismatic.models.heads, the proprio projector): the same names in both layouts.
ACTION_GROUPS = ("action_head", "proprio_projector")


def native_featurizer_names(vision_backbone_id: str) -> tuple[str, ...]:
    spec = VISION_BACKBONES.get(vision_backbone_id)
    if len(spec.featurizers) == 1:
        return ("featurizer",)
    family = vision_backbone_id.split("-")[0]
    return _NATIVE_FEATURIZER_NAMES[family]


def _swap_layerscale(key: str, to_native: bool) -> str:
    if to_native:
        return re.sub(r"\.(ls[12])\.scale_factor$", r".\1.gamma", key)
    return re.sub(r"\.(ls[12])\.gamma$", r".\1.scale_factor", key)


def hf_to_native(
    state_dict: Mapping[str, torch.Tensor], vision_backbone_id: str, projector_type: str
) -> dict[str, dict[str, torch.Tensor]]:
    """Flat HF-layout state dict -> `{"vision_backbone": ..., "projector": ..., "llm_backbone": ...}`."""
    native_names = dict(zip(_HF_FEATURIZER_NAMES, native_featurizer_names(vision_backbone_id)))
    out: dict[str, dict[str, torch.Tensor]] = {"vision_backbone": {}, "projector": {}, "llm_backbone": {}}
    for key, tensor in state_dict.items():
        group, _, rest = key.partition(".")
        if group == "vision_backbone":
            featurizer, _, name = rest.partition(".")
            if featurizer not in native_names:
                raise KeyError(f"unexpected vision key {key!r}: expected one of {sorted(native_names)}")
            out["vision_backbone"][f"{native_names[featurizer]}.{_swap_layerscale(name, True)}"] = tensor
        elif group == "projector":
            module, _, param = rest.partition(".")
            name = param if projector_type == "linear" else f"{_PROJECTOR_NATIVE[module]}.{param}"
            out["projector"][_PROJECTOR_PREFIX + name] = tensor
        elif group == "language_model":
            out["llm_backbone"][f"llm.{rest}"] = tensor
        elif group in ACTION_GROUPS:
            out.setdefault(group, {})[rest] = tensor
        else:
            raise KeyError(
                f"unexpected key {key!r}: not under vision_backbone, projector, language_model or {', '.join(ACTION_GROUPS)}"
            )
    return out


def native_to_hf(
    model_state: Mapping[str, Mapping[str, torch.Tensor]], vision_backbone_id: str, projector_type: str
) -> dict[str, torch.Tensor]:
    """Inverse of `hf_to_native`."""
    missing = {"vision_backbone", "projector", "llm_backbone"} - set(model_state)
    if missing:
        raise KeyError(
            f"native checkpoint 'model' is missing {sorted(missing)}; it has {sorted(model_state)} "
            "(expected the layout {'model': {'vision_backbone', 'projector', 'llm_backbone'}})"
        )
    hf_names = dict(zip(native_featurizer_names(vision_backbone_id), _HF_FEATURIZER_NAMES))
    from_native = {v: k for k, v in _PROJECTOR_NATIVE.items()}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in model_state["vision_backbone"].items():
        featurizer, _, name = key.partition(".")
        if featurizer not in hf_names:
            raise KeyError(
                f"unexpected vision key {key!r} for {vision_backbone_id}: expected prefixes {sorted(hf_names)}"
            )
        out[f"vision_backbone.{hf_names[featurizer]}.{_swap_layerscale(name, False)}"] = tensor
    for key, tensor in model_state["projector"].items():
        key = key.removeprefix(_PROJECTOR_PREFIX)
        if projector_type == "linear":
            out[f"projector.fc1.{key}"] = tensor
        else:
            index, _, param = key.partition(".")
            if index not in from_native:
                raise KeyError(f"unexpected projector key {key!r} for {projector_type}: expected "
                               f"projector.{{{','.join(sorted(from_native))}}}.weight/bias")  # fmt: skip
            out[f"projector.{from_native[index]}.{param}"] = tensor
    for key, tensor in model_state["llm_backbone"].items():
        if not key.startswith("llm."):
            raise KeyError(f"unexpected LLM key {key!r}: native LLM keys start with 'llm.'")
        out[f"language_model.{key[len('llm.'):]}"] = tensor
    for group in ACTION_GROUPS:
        for key, tensor in model_state.get(group, {}).items():
            out[f"{group}.{key}"] = tensor
    return out


def hf_state_to_native(model: OpenVLAForActionPrediction) -> dict[str, dict[str, torch.Tensor]]:
    """An HF-layout model's weights in the native layout (what `checkpoints/*.pt` hold under "model")."""
    cfg = model.config
    return hf_to_native(model.state_dict(), cfg.vision_backbone_id, cfg.projector_type)


def native_arch_section(config: OpenVLAConfig) -> dict[str, Any]:
    """The `model` section of a native config.json: the architecture, no statistics."""
    d = config.to_dict()
    for key in NON_ARCH_FIELDS:
        d.pop(key, None)
    return d
