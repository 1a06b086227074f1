"""VLM runs on disk: reading one (to continue training from it, to chat with it) and the config it implies.

A VLM run is the native layout VLA runs and the prismatic-vlms release use:

    run_dir/config.json          {"model": {vision_backbone_id, llm_backbone_id, arch_specifier, ...},
                                  "task": "vlm", "stage": "align" | "finetune" | ...}
    run_dir/checkpoints/*.pt     {"model": {"projector": ..., ["llm_backbone": ...], ["vision_backbone": ...]}}
    run_dir/tokenizer/           the tokenizer it trained with

A checkpoint holds the groups a stage trained, plus any group whose weights exist nowhere else (a randomly
initialised ViT or LLM of a tiny model); a group it lacks comes from where the stage took it: the ViT from
timm's pretrained weights, the LLM from its Hugging Face weights. So an align run of a full-size model holds
only the projector (as the original's), and a finetune run holds projector + LLM (as the released base VLMs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prismatic.models.configuration import PrismaticConfig
from prismatic.models.errors import CheckpointError
from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.load import _checkpoint_candidates, _native_arch, load_native_state
from prismatic.models.projectors import PROJECTORS
from prismatic.models.vision.backbones import VISION_BACKBONES
from prismatic.vlm.stages import GROUPS

TASK = "vlm"  # config.json "task" of a VLM run
# Architecture fields of a `model` section (the release's adds stage recipes and ids, which are dropped).
ARCH_FIELDS = set(PrismaticConfig.__annotations__) - {"model_type"}


@dataclass
class VLMCheckpoint:
    """A VLM run's weight file, its architecture and what it holds (tensors memory-mapped, read when used)."""

    run_dir: Path
    checkpoint: Path
    arch: dict[str, Any]
    groups: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)  # the run's whole config.json

    @property
    def stage(self) -> str | None:
        return self.record.get("stage") if self.record.get("task") == TASK else None

    @property
    def tokenizer_dir(self) -> Path | None:
        return self.run_dir / "tokenizer" if (self.run_dir / "tokenizer").is_dir() else None

    def embedding_rows(self) -> int | None:
        """Rows of the LLM's input embedding in the checkpoint (None: it holds no LLM)."""
        keys = [k for k in self.groups.get("llm_backbone", {}) if k.endswith("embed_tokens.weight")]
        return int(self.groups["llm_backbone"][keys[0]].shape[0]) if len(keys) == 1 else None


def _weights_file(path: Path) -> Path:
    if path.is_file():
        if path.suffix != ".pt" or path.parent.name != "checkpoints":
            raise CheckpointError(f"{path} is a file but not a checkpoints/*.pt file of a run directory")
        return path
    if not (path / "checkpoints").is_dir():
        raise CheckpointError(f"{path} is not a VLM run directory (config.json + checkpoints/*.pt)")
    return _checkpoint_candidates(path)[0]


def read_vlm_checkpoint(path: str | Path) -> VLMCheckpoint:
    """A VLM run directory (its newest checkpoint) or one of its `checkpoints/*.pt` files; a prismatic-vlms release
    directory reads the same way."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    checkpoint = _weights_file(path)
    run_dir = checkpoint.parents[1]
    arch = _native_arch(run_dir)
    try:
        record = json.loads((run_dir / "config.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"{run_dir / 'config.json'} is not valid JSON ({e})") from e
    groups = load_native_state(checkpoint)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise CheckpointError(f"{checkpoint} holds {unknown}: a VLA's weights, not a VLM's (load it with load_vla)")
    return VLMCheckpoint(run_dir, checkpoint, arch, dict(groups), record)


def checkpoint_problems(path: str | Path) -> list[str]:
    """Why `path` cannot be a starting point of VLM training (empty: it can), without reading any tensor."""
    try:
        ckpt = read_vlm_checkpoint(path)
    except CheckpointError as e:
        return [str(e)]
    problems = []
    for key, registry in (("vision_backbone_id", VISION_BACKBONES), ("llm_backbone_id", LLM_BACKBONES)):
        if ckpt.arch.get(key) not in registry:
            problems.append(f"{ckpt.run_dir / 'config.json'}: model.{key}={ckpt.arch.get(key)!r} is not one of "
                            f"{', '.join(registry)}")  # fmt: skip
    if str(ckpt.arch.get("arch_specifier", "")).split("+")[-1] not in PROJECTORS:
        problems.append(f"{ckpt.run_dir / 'config.json'}: model.arch_specifier={ckpt.arch.get('arch_specifier')!r} names "
                        f"no projector ({', '.join(PROJECTORS)})")  # fmt: skip
    if "projector" not in ckpt.groups:
        problems.append(f"{ckpt.checkpoint} has no projector weights (it holds: {', '.join(ckpt.groups) or 'nothing'})")
    return problems


def vlm_config(arch: dict[str, Any], tokenizer: Any, embedding_rows: int | None = None) -> PrismaticConfig:
    """The model config of a `model` section: its architecture fields; without a `text_config` (the release)
    the registry's LLM with the checkpoint's embedding rows, else the original's padded vocabulary."""
    fields = {k: v for k, v in arch.items() if k in ARCH_FIELDS}
    fields.setdefault("pad_token_id", tokenizer.pad_token_id)
    if fields.get("text_config") is None:
        llm = LLM_BACKBONES.get(fields["llm_backbone_id"])
        rows = embedding_rows or llm.embedding_rows(int(fields.get("pad_to_multiple_of", 64)))
        fields["text_config"] = llm.text_config(vocab_size=rows, pad_token_id=fields["pad_token_id"]).to_dict()
    return PrismaticConfig(**fields)
