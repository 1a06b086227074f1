"""Synthetic RLDS datasets (real feature schemas, tiny images) written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

# Import prismatic (torch/torchvision) before TensorFlow: the other order segfaults in this stack.
import prismatic  # noqa: F401
import prismatic.models.action_tokenizer  # noqa: F401

ASSETS = Path(__file__).resolve().parents[1] / "assets"
HW = (32, 32)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """bridge_orig (folder name != tfds name, as real OXE copies), fractal (RT-1), LIBERO (legacy metadata)."""
    from prismatic.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("rlds")
    episodes = {
        "bridge_orig": write_synthetic(
            root, "bridge_orig", num_episodes=4, episode_len=[6, 7, 5, 6], image_size=HW, seed=1
        ),
        "fractal20220817_data": write_synthetic(
            root,
            "fractal20220817_data",
            num_episodes=4,
            episode_len=[5, 6, 4, 5],
            image_size=(32, 40),
            seed=2,
        ),
        "libero_spatial_no_noops": write_synthetic(
            root,
            "libero_spatial_no_noops",
            num_episodes=4,
            episode_len=[5, 4, 6, 5],
            image_size=HW,
            seed=3,
            legacy_metadata=True,
        ),
    }
    return root, episodes


@pytest.fixture(scope="session")
def llama_tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(ASSETS / "llama2" / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<PAD>",
    )
