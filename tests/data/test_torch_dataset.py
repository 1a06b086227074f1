"""Torch side: prompt + action token ids, labels, collation, and the IterableDataset end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from prismatic.constants import IGNORE_INDEX, LLAMA2_EMPTY_TOKEN_ID
from prismatic.data.errors import DataError
from prismatic.data.pipeline import PipelineConfig
from prismatic.data.torch_dataset import PaddedCollator, RLDSBatchTransform, RLDSDataset
from prismatic.models.action_tokenizer import ActionTokenizer
from prismatic.models.sample_encoder import SampleEncoder


def to_tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255.0


def original_ids(tokenizer, instruction, action, n_bins=256):
    """What the original did: decode the action ids to characters and tokenise the whole turn."""
    bins = np.linspace(-1, 1, n_bins)
    ids = 32000 - np.digitize(np.clip(action, -1, 1), bins)  # computed here, independently
    text = (
        f"In: What action should the robot take to {instruction.lower()}?\nOut: "
        + tokenizer.decode(list(ids))
        + "</s>"
    )
    return tokenizer(text, add_special_tokens=True).input_ids, ids


def transform(tokenizer, **kw) -> RLDSBatchTransform:
    """OpenVLA's layout: Llama-2's empty token before the 7 action tokens, one camera."""
    kw.setdefault("empty_token_id", LLAMA2_EMPTY_TOKEN_ID)
    return RLDSBatchTransform(SampleEncoder(tokenizer, to_tensor, ActionTokenizer(), **kw))


def frame(action, instruction=b"Pick Up The Block", hw=8):
    return {
        "observation": {"image_primary": np.zeros((1, hw, hw, 3), np.uint8), "pad_mask": np.array([True])},
        "task": {"language_instruction": instruction},
        "action": np.asarray(action, np.float32)[None],
        "dataset_name": b"bridge_orig",
    }


def test_action_ids_appended_directly_equal_original_retokenisation(llama_tokenizer):
    t = transform(llama_tokenizer, prompt_builder="pure")
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.uniform(-1.2, 1.2, (300, 7)), rng.choice([-1.0, 1.0, 0.0], (40, 7))])
    for i, a in enumerate(actions):
        instr = ["Pick Up The Block", "put the spoon in the pot ", "open drawer"][i % 3]
        out = t(frame(a, instr.encode()))
        want, action_ids = original_ids(llama_tokenizer, instr, a)  # whitespace kept, as the original
        assert out["input_ids"].tolist() == want, f"mismatch for action {a}"
        labels = out["labels"].tolist()
        n = len(labels)
        assert labels[: n - 8] == [IGNORE_INDEX] * (n - 8)
        assert labels[n - 8 : n - 1] == action_ids.tolist() and labels[-1] == llama_tokenizer.eos_token_id
        assert out["input_ids"][n - 9] == LLAMA2_EMPTY_TOKEN_ID


def test_no_stop_token_option_and_fields(llama_tokenizer):
    t = transform(llama_tokenizer, predict_stop_token=False)
    out = t(frame(np.zeros(7)))
    assert out["labels"][-1] == IGNORE_INDEX and (out["labels"] != IGNORE_INDEX).sum() == 7
    assert out["pixel_values"].shape == (3, 8, 8)
    assert out["dataset_name"] == "bridge_orig"
    with pytest.raises(KeyError, match="choose one of"):
        transform(llama_tokenizer, prompt_builder="nope")


def test_padded_collator_pads_masks_truncates():
    items = [
        {
            "input_ids": torch.tensor([1, 5, 6]),
            "labels": torch.tensor([-100, 5, 6]),
            "pixel_values": torch.ones(3, 4, 4),
            "dataset_name": "a",
        },
        {
            "input_ids": torch.tensor([1, 7, 8, 9, 10]),
            "labels": torch.tensor([-100, -100, 8, 9, 10]),
            "pixel_values": torch.zeros(3, 4, 4),
            "dataset_name": "b",
        },
    ]
    out = PaddedCollator(pad_token_id=32000, model_max_length=4)(items)
    assert out["input_ids"].tolist() == [[1, 5, 6, 32000], [1, 7, 8, 9]]
    assert out["labels"].tolist() == [[-100, 5, 6, -100], [-100, -100, 8, 9]]
    assert out["attention_mask"].tolist() == [[True, True, True, False], [True] * 4]
    assert out["pixel_values"].shape == (2, 3, 4, 4) and out["dataset_names"] == ["a", "b"]
    dict_items = [
        dict(x, pixel_values={"dino": x["pixel_values"], "siglip": x["pixel_values"]}) for x in items
    ]
    out = PaddedCollator(pad_token_id=0, model_max_length=16)(dict_items)
    assert set(out["pixel_values"]) == {"dino", "siglip"} and out["pixel_values"]["dino"].shape == (
        2,
        3,
        4,
        4,
    )
    with pytest.raises(DataError):
        PaddedCollator(pad_token_id=0, model_max_length=8)([])


def test_rlds_dataset_through_dataloader(synthetic_root, llama_tokenizer):
    root, _ = synthetic_root
    t = transform(llama_tokenizer)
    ds = RLDSDataset(
        root,
        [("bridge_orig", 1.0), ("libero_spatial_no_noops", 1.0)],
        t,
        PipelineConfig(resize_size=(16, 16), shuffle_buffer_size=32),
    )
    assert len(ds) > 0 and set(ds.dataset_statistics) == {"bridge_orig", "libero_spatial_no_noops"}
    loader = DataLoader(
        ds, batch_size=4, num_workers=0, collate_fn=PaddedCollator(llama_tokenizer.pad_token_id, 2048)
    )
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (4, 3, 16, 16)
    assert (
        batch["input_ids"].shape[0] == 4 and batch["input_ids"][:, 0].eq(llama_tokenizer.bos_token_id).all()
    )
    assert ((batch["labels"] != IGNORE_INDEX).sum(1) == 8).all()  # 7 action tokens + EOS each
    action_labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
    assert ((action_labels >= 31744) | (action_labels == llama_tokenizer.eos_token_id)).all()


def _leaves_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_leaves_equal(a[k], b[k]) for k in a)
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_chunked_frame_fetching_gives_the_same_stream(synthetic_root):
    """Frames fetched 32 at a time from TensorFlow and split are the per-frame stream, in order."""
    import itertools

    import tensorflow as tf

    from prismatic.data.pipeline import make_dataset
    from prismatic.data.torch_dataset import iter_frames

    root, _ = synthetic_root
    config = PipelineConfig(resize_size=(16, 16), shuffle_buffer_size=32, seed=3)
    mixture = [("bridge_orig", 1.0), ("libero_spatial_no_noops", 1.0)]
    stream = make_dataset(root, mixture, config, train=True).dataset
    assert all(s.shape.is_fully_defined() for s in tf.nest.flatten(stream.element_spec))  # the chunked path
    one_by_one = list(itertools.islice(stream.as_numpy_iterator(), 70))
    again = make_dataset(root, mixture, config, train=True).dataset  # a fresh stream replays the same frames
    chunked = list(itertools.islice(iter_frames(again, chunk=32), 70))
    assert len(chunked) == 70 and all(_leaves_equal(a, b) for a, b in zip(one_by_one, chunked, strict=True))
    assert isinstance(chunked[0]["task"]["language_instruction"], bytes)  # scalars stay scalars

    # frames whose shapes vary cannot be batched: fetched one by one, unchanged
    ragged = tf.data.Dataset.from_generator(
        lambda: ({"x": np.arange(n)} for n in (1, 3, 2)), output_signature={"x": tf.TensorSpec([None], tf.int64)}
    )
    assert [f["x"].tolist() for f in iter_frames(ragged)] == [[0], [0, 1, 2], [0, 1]]
