"""Where each vision featurizer's pretrained timm weights are found.

The original built every ViT with `timm.create_model(name, pretrained=True, img_size=...)`, which downloads
the weights from the Hugging Face Hub. We look for the same files ourselves, so they load offline too, then
hand them to timm's loader (`backbones.create_featurizer`). A featurizer's weights are the file named by
its timm name with tag (`FeaturizerSpec.weights_name`, e.g. `vit_large_patch14_reg4_dinov2.lvd142m`),
searched in this order:

1. `--vla.vision_weights PATH` when given, and only there: a weights file (backbones with one featurizer),
   or a directory holding, per featurizer NAME, `NAME/model.safetensors` (what
   `huggingface-cli download timm/NAME model.safetensors --local-dir DIR/NAME` writes), `NAME.safetensors`
   (or `.bin` / `.pth`), or a Hugging Face hub cache (`models--timm--NAME/snapshots/...`);
2. the local Hugging Face cache (`$HF_HUB_CACHE`, filled by any earlier download, also by the original's);
3. the Hub itself, unless offline (`HF_HUB_OFFLINE=1`).

Missing weights raise `MissingVisionWeightsError`, naming each file to download, its URL and where to put it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

from prismatic.models.vision.backbones import (
    VISION_BACKBONES,
    FeaturizerSpec,
    FeaturizerWeights,
    VisionBackbone,
)
from prismatic.util.logging import get_logger

log = get_logger(__name__)

# File names a timm repository on the Hub may use, preferred first (timm's own format, then OpenCLIP's).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_SUFFIXES = (".safetensors", ".bin", ".pth")


class MissingVisionWeightsError(FileNotFoundError):
    """Pretrained weights for one or more featurizers are neither where the user pointed nor cached."""


@dataclass(frozen=True)
class HubWeights:
    """A featurizer's pretrained weights on the Hub: timm name (with tag) and the repositories holding them."""

    name: str
    repos: tuple[str, ...]  # timm's current repository first, then older ones with the same weights

    @classmethod
    def of(cls, featurizer: FeaturizerSpec) -> HubWeights:
        name = featurizer.weights_name
        cfg = timm.models.get_pretrained_cfg(name)
        repo = cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else "timm/"
        if repo.endswith("/"):  # timm's shorthand for "<org>/<model name>"
            repo += name
        return cls(name, (repo, *featurizer.legacy_repos))

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repos[0]}"

    def how_to_get(self, location: Path | None = None) -> str:
        """Where to download the file from and where to put it."""
        target = f"{location}/{self.name}" if location is not None and location.is_dir() else f"DIR/{self.name}"
        how = (f"download {WEIGHT_FILES[0]} from {self.url} into {target}/ (`huggingface-cli download "
               f"{self.repos[0]} {WEIGHT_FILES[0]} --local-dir {target}`)")  # fmt: skip
        if location is None:
            how += " and pass --vla.vision_weights DIR, or run once with network access to fill the Hugging Face cache"
        return how


def featurizers_of(vision_backbone_id: str, timm_model_ids: Sequence[str] | None = None) -> list[FeaturizerSpec]:
    """The registered featurizers of a backbone; ids a config spells differently are taken as they are."""
    spec = VISION_BACKBONES.get(vision_backbone_id)
    if timm_model_ids is None or list(timm_model_ids) == spec.timm_model_ids:
        return list(spec.featurizers)
    return [FeaturizerSpec(timm_id) for timm_id in timm_model_ids]


def _from_cache(hub: HubWeights, cache_dir: Path | None) -> Path | None:
    for repo in hub.repos:
        for filename in WEIGHT_FILES:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
            if isinstance(found, str):  # (None: not cached; a sentinel: known to be absent on the Hub)
                return Path(found)
    return None


def _from_location(hub: HubWeights, location: Path) -> Path | None:
    candidates = [location / hub.name / f for f in WEIGHT_FILES] + [location / f"{hub.name}{s}" for s in _SUFFIXES]
    for path in candidates:
        if path.is_file():
            return path
    return _from_cache(hub, location)  # a Hugging Face hub cache (or a copy of one)


def _download(hub: HubWeights, cache_dir: Path | None) -> tuple[Path | None, str]:
    """(the downloaded file, or None and the last error)."""
    if hf_constants.is_offline_mode():
        return None, "HF_HUB_OFFLINE is set"
    error = ""
    for repo in hub.repos:
        for filename in WEIGHT_FILES:
            try:
                return Path(hf_hub_download(repo, filename, cache_dir=cache_dir)), ""
            except LocalEntryNotFoundError as e:  # no connection: the other files would fail alike
                return None, f"{type(e).__name__}: {e}".splitlines()[0]
            except (EntryNotFoundError, RepositoryNotFoundError) as e:  # not there: try the next file
                error = f"{type(e).__name__}: {e}".splitlines()[0]
            except Exception as e:  # the Hub refused (gated, rate limit, ...)
                return None, f"{type(e).__name__}: {e}".splitlines()[0]
    return None, error


def _where(location: Path | None, cache_dir: Path | None) -> str:
    if location is not None:
        return f"--vla.vision_weights={location}"
    return f"the Hugging Face cache {cache_dir or hf_constants.HF_HUB_CACHE}"


def vision_weights_problems(
    vision_backbone_id: str,
    location: Path | None = None,
    timm_model_ids: Sequence[str] | None = None,
    cache_dir: Path | None = None,
) -> list[str]:
    """Why the backbone's pretrained weights cannot be found (empty: found locally, or downloadable)."""
    featurizers = featurizers_of(vision_backbone_id, timm_model_ids)
    if location is not None:
        location = Path(location).expanduser()
        if not location.exists():
            return [f"--vla.vision_weights={str(location)!r} does not exist"]
        if location.is_file():
            if len(featurizers) > 1:
                names = ", ".join(f.weights_name for f in featurizers)
                return [f"--vla.vision_weights={str(location)!r} is one file but {vision_backbone_id} has "
                        f"{len(featurizers)} featurizers ({names}): pass a directory holding NAME/model.safetensors "
                        "for each"]  # fmt: skip
            return []
    online = location is None and not hf_constants.is_offline_mode()
    problems = []
    for featurizer in featurizers:
        hub = HubWeights.of(featurizer)
        found = _from_location(hub, location) if location is not None else _from_cache(hub, cache_dir)
        if found is None and not online:
            problems.append(f"no pretrained weights for featurizer {hub.name!r} of {vision_backbone_id} in "
                            f"{_where(location, cache_dir)}: {hub.how_to_get(location)}")  # fmt: skip
    return problems


def find_vision_weights(
    vision_backbone_id: str,
    location: Path | None = None,
    timm_model_ids: Sequence[str] | None = None,
    cache_dir: Path | None = None,
) -> list[FeaturizerWeights]:
    """The weights file of each featurizer (downloading into the HF cache when online and not cached)."""
    problems = vision_weights_problems(vision_backbone_id, location, timm_model_ids, cache_dir)
    if problems:
        raise MissingVisionWeightsError("; ".join(problems))
    out, missing = [], []
    for featurizer in featurizers_of(vision_backbone_id, timm_model_ids):
        hub = HubWeights.of(featurizer)
        error = ""
        if location is not None:
            path = Path(location).expanduser()
            path = path if path.is_file() else _from_location(hub, path)
        else:
            path = _from_cache(hub, cache_dir)
            if path is None:
                path, error = _download(hub, cache_dir)
        if path is None:
            missing.append(f"{hub.name!r} (downloading from {hub.url} failed: {error}): {hub.how_to_get()}")
        else:
            log.info(f"pretrained weights of {hub.name}: {path}")
            out.append(FeaturizerWeights(hub.name, path))
    if missing:
        raise MissingVisionWeightsError(f"could not get pretrained weights for {vision_backbone_id}: " + "; ".join(missing))
    return out


def pretrained_vision_state(config, location: Path | None = None, cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """The `vision_backbone.*` tensors (HF layout) of a Prismatic config's backbone, from pretrained weights."""
    weights = find_vision_weights(config.vision_backbone_id, location, config.timm_model_ids, cache_dir)
    backbone = VisionBackbone(config.timm_model_ids, config.image_sizes, config.timm_override_act_layers,
                              config.timm_model_kwargs, weights=weights)  # fmt: skip
    return {f"vision_backbone.{k}": v for k, v in backbone.state_dict().items()}
