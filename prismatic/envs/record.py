"""Record tabletop demonstrations as a real RLDS dataset (TFDS format, like Open X-Embodiment).

The dataset is registered by one YAML entry (`configs/datasets/tabletop_reach.yaml`), so it is also
the worked example of bringing one's own dataset: write RLDS episodes, describe them in YAML, train.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prismatic.envs.tabletop import STATE_DIM

DATASET_NAME = "tabletop_reach"


def tabletop_features(image_size: int):
    import tensorflow_datasets as tfds

    from prismatic.data.synthetic import rlds_flag_features

    step = {
        "observation": tfds.features.FeaturesDict({
            # PNG: lossless, so evaluation sees exactly the pixels training saw
            "image": tfds.features.Image(shape=(image_size, image_size, 3), dtype=np.uint8, encoding_format="png"),
            "state": tfds.features.Tensor(shape=(STATE_DIM,), dtype=np.float32),
        }),
        "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
        **rlds_flag_features(),
        "language_instruction": tfds.features.Text(),
    }  # fmt: skip
    return tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset(step),
        "episode_metadata": tfds.features.FeaturesDict({"seed": tfds.features.Scalar(dtype=np.int64)}),
    })  # fmt: skip


def to_rlds_episode(ep: dict[str, Any]) -> dict[str, Any]:
    """One `collect_episodes` episode (per-step arrays) -> an RLDS episode (list of step dicts)."""
    steps = [
        {
            "observation": {"image": ep["image"][t], "state": ep["state"][t]},
            "action": ep["action"][t],
            "reward": float(ep["reward"][t]),
            "discount": 1.0,
            "is_first": bool(ep["is_first"][t]),
            "is_last": bool(ep["is_last"][t]),
            "is_terminal": bool(ep["is_terminal"][t]),
            "language_instruction": str(ep["language_instruction"][t]),
        }
        for t in range(len(ep["action"]))
    ]
    return {"steps": steps, "episode_metadata": {"seed": int(ep["seed"])}}


def record_rlds(
    episodes: Sequence[dict[str, Any]], data_root: str | Path, name: str = DATASET_NAME, version: str = "1.0.0"
) -> Path:
    """Write episodes to `<data_root>/<name>/<version>/` and return that directory."""
    from prismatic.data.synthetic import write_rlds

    if not episodes:
        raise ValueError("no episodes to record")
    size = int(episodes[0]["image"].shape[1])
    return write_rlds(data_root, name, tabletop_features(size), [to_rlds_episode(e) for e in episodes], version=version)
