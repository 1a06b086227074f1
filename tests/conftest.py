"""Shared fixtures. Assets under tests/assets/ were produced by running the original OpenVLA code
(see tests/assets/README.md); tests never download anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import prismatic  # noqa: F401  (first: loads torch/triton before any test module imports tensorflow)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _set_intra_op_threads() -> None:
    """PRISMATIC_TEST_THREADS=N: run every test with N torch intra-op threads. The suite must pass with 1 and
    with 2: the thread count changes the order of summation, and no comparison may depend on that order."""
    value = os.environ.get("PRISMATIC_TEST_THREADS")
    if not value:
        return
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"PRISMATIC_TEST_THREADS={value!r} must be a positive integer")
    import torch

    torch.set_num_threads(int(value))


_set_intra_op_threads()

ASSETS = Path(__file__).parent / "assets"
TINY = ASSETS / "openvla-tiny"


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    return TINY / "checkpoint"


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads((TINY / "expected.json").read_text())


@pytest.fixture(scope="session")
def tiny_vla(tiny_checkpoint):
    """The tiny reference checkpoint loaded once (treat as read-only)."""
    from prismatic.models.load import load_vla

    return load_vla(tiny_checkpoint)


# -- a tiny base VLM in the prismatic-vlms release layout ------------------------------------------------------
def _write_timm_weights(path: Path, weights_name: str, tiny: dict, native_size: int, seed: int) -> Path:
    """A random tiny ViT saved as timm's Hub files are: a safetensors state dict with timm's key names, at
    the checkpoint's native resolution (timm resamples the position table to the size a model asks for)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    vit = timm.create_model(weights_name, pretrained=False, img_size=native_size, **tiny)
    state = vit.state_dict()
    for key in state:  # LayerScale starts as a constant 1e-5 in timm: make every value distinct
        if key.endswith((".ls1.gamma", ".ls2.gamma")):
            state[key] = torch.rand_like(state[key])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _write_released_base_vlm(model_dir: Path, vision_dir: Path, seed: int = 0) -> dict:
    """`prism-dinosiglip-224px+7b` as TRI-ML/prismatic-vlms ships it, shrunk: config.json {"model": ...} and
    checkpoints/latest-checkpoint.pt holding only `projector` and `llm_backbone`; the two ViTs' pretrained
    weights as timm files under `vision_dir/<timm name>/model.safetensors`. The tiny sizes go in the `model`
    section as `timm_model_kwargs` and `text_config` (fields our loader honours; the release has neither).
    Returns the native state dict written."""
    import torch

    from prismatic.models.configuration import OpenVLAConfig
    from prismatic.models.layouts import hf_to_native
    from prismatic.models.llm.backbones import LLM_BACKBONES
    from prismatic.models.modeling import OpenVLAForActionPrediction
    from prismatic.models.vision.backbones import VISION_BACKBONES

    vision = VISION_BACKBONES.get("dinosiglip-vit-so-224px")
    tiny = vision.tiny_kwargs()
    for i, (featurizer, kwargs) in enumerate(zip(vision.featurizers, tiny)):
        native = 518 if "dinov2" in featurizer.timm_id else 224  # DINOv2's Hub weights are at 518 px
        _write_timm_weights(vision_dir / featurizer.weights_name / "model.safetensors", featurizer.weights_name,
                           kwargs, native, seed + i)  # fmt: skip
    llm = LLM_BACKBONES.get("llama2-7b-pure")
    text = llm.text_config(vocab_size=32064, tiny=True, pad_token_id=32000, initializer_range=llm.tiny["hidden_size"] ** -0.5)
    config = OpenVLAConfig(text_config=text.to_dict(), timm_model_kwargs=tiny, norm_stats={})
    torch.manual_seed(seed)
    native = hf_to_native(OpenVLAForActionPrediction(config).state_dict(), config.vision_backbone_id, config.projector_type)
    del native["vision_backbone"]  # the release keeps the ViTs out: they come from timm
    (model_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"model": native}, model_dir / "checkpoints" / "latest-checkpoint.pt")
    model_section = {
        "type": "prism-dinosiglip-224px+7b", "model_id": "prism-dinosiglip-224px+7b",
        "arch_specifier": "no-align+fused-gelu-mlp", "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure", "image_resize_strategy": "resize-naive", "llm_max_length": 2048,
        "align_epochs": 1, "align_max_steps": None, "align_global_batch_size": 256, "align_per_device_batch_size": 16,
        "align_learning_rate": 0.001, "align_train_strategy": "fsdp-shard-grad-op", "finetune_epochs": 2,
        "finetune_global_batch_size": 128, "finetune_per_device_batch_size": 16, "finetune_learning_rate": 2e-05,
        "finetune_train_strategy": "fsdp-full-shard", "enable_gradient_checkpointing": True,
        "enable_mixed_precision_training": True, "reduce_in_full_precision": False,
        "timm_model_kwargs": tiny, "text_config": text.to_dict(),
    }  # fmt: skip
    release = {"model": model_section, "dataset": {"type": "llava-lvis4v-lrv", "dataset_id": "llava-lvis4v-lrv"},
               "stage": "finetune", "pretrained_checkpoint": None, "run_id": "prism-dinosiglip-224px+7b",
               "run_root_dir": "runs", "seed": 7, "hf_token": ".hf_token", "trackers": ["jsonl", "wandb"]}  # fmt: skip
    (model_dir / "config.json").write_text(json.dumps(release, indent=2))
    return native


@pytest.fixture(scope="session")
def released_base_vlm(tmp_path_factory) -> dict:
    """A tiny released-layout base VLM under a model root, its ViT weights directory and its tensors."""
    root = tmp_path_factory.mktemp("model_root")
    vision = tmp_path_factory.mktemp("timm_weights")
    native = _write_released_base_vlm(root / "prism-dinosiglip-224px+7b", vision)
    return {"root": root, "dir": root / "prism-dinosiglip-224px+7b", "vision_weights": vision, "native": native}


@pytest.fixture(scope="session")
def write_timm_weights():
    """`write_timm_weights(path, timm name with tag, tiny kwargs, native size, seed) -> path`."""
    return _write_timm_weights


# The files whose end-to-end tests take minutes, longest first (`--durations` in the test command lists them).
# With `-n 2 --dist loadfile --no-loadscope-reorder` (scripts/test.sh) a file is one unit of work handed out in
# collection order: one of these collected last runs alone at the end while the other worker idles, so they are
# handed out first. (Without --no-loadscope-reorder, xdist orders files by their number of tests instead.)
LONG_FILES = ("tests/envs/test_demo.py", "tests/envs/test_toy_vlm.py", "tests/eval/test_libero_smoke.py",
              "tests/scripts/test_gpu_check_smoke.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))

    def rank(item: pytest.Item) -> int:
        path = Path(str(item.path)).resolve()
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
        return LONG_FILES.index(rel) if rel in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: every file keeps its tests' order
