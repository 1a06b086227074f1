"""Observation keys per protocol: defaults, overrides, the key-spec grammar, and validation that lists
every problem with the key it looked for and how to change it."""

from __future__ import annotations

import numpy as np
import pytest

from prismatic.serve.errors import RequestError
from prismatic.serve.observation import KeySpec, ObservationKeys, build_request, parse_overrides

IMAGE = np.zeros((8, 10, 3), dtype=np.uint8)
WRIST = np.ones((6, 6, 3), dtype=np.uint8)


def _resolve(key):
    if key not in (None, "bridge_orig"):
        raise RequestError(f"unknown unnorm_key {key!r}; this model has statistics for: bridge_orig")
    return "bridge_orig"


def test_key_spec_grammar():
    obs = {"observation/image": 1, "images": {"agentview": 2, "wrist": 3}, "list": [4, 5], "a.b": 6}
    assert KeySpec.parse("observation/image").find(obs) == (True, 1)
    assert KeySpec.parse("images.wrist").find(obs) == (True, 3)
    assert KeySpec.parse("images[0]").find(obs) == (True, 2)
    assert KeySpec.parse("images[1]").find(obs) == (True, 3)
    assert KeySpec.parse("list[1]").find(obs) == (True, 5)
    assert KeySpec.parse("a.b").find(obs) == (True, 6)  # a literal key wins over the path reading
    assert KeySpec.parse("missing|images.agentview").find(obs) == (True, 2)
    assert KeySpec.parse("images[2]|nothing").find(obs) == (False, None)
    for bad in ("", "a||b", "images[x]", "a.[", "x]"):
        with pytest.raises(ValueError, match="key spec"):
            KeySpec.parse(bad)


def test_defaults_and_overrides():
    keys = ObservationKeys("openpi", ("primary", "wrist", "left"))
    assert keys.describe()["primary"] == "observation/image"
    assert keys.describe()["left"] == "observation/left_image"  # cameras without a default
    overrides = parse_overrides(
        ["openpi.primary=observation/exterior_image_1_left", "vla-eval.wrist=images.wrist"],
        ("rest", "openpi", "vla-eval"),
    )
    assert overrides == {
        "openpi": {"primary": "observation/exterior_image_1_left"},
        "vla-eval": {"wrist": "images.wrist"},
    }
    keys = ObservationKeys("openpi", ("primary",), overrides["openpi"])
    assert keys.describe()["primary"] == "observation/exterior_image_1_left"
    with pytest.raises(ValueError, match="PROTOCOL.FIELD=KEY"):
        parse_overrides(["openpi=x"], ("openpi",))
    with pytest.raises(ValueError, match="unknown protocol 'grpc'.*rest"):
        parse_overrides(["grpc.primary=x"], ("rest", "openpi"))
    with pytest.raises(ValueError, match=r"field\(s\) \['wrist'\].*primary"):
        ObservationKeys("rest", ("primary",), {"wrist": "w"})


def test_build_request_per_protocol():
    rest = build_request(
        {"image": IMAGE, "instruction": "go", "unnorm_key": None},
        ObservationKeys("rest", ("primary",)),
        0,
        _resolve,
    )
    assert rest.instruction == "go" and rest.unnorm_key == "bridge_orig" and rest.images[0] is IMAGE
    oft = build_request(
        {"full_image": IMAGE, "wrist_image": WRIST, "state": [0.0] * 8, "instruction": "go"},
        ObservationKeys("rest", ("primary", "wrist")), 8, _resolve,
    )  # fmt: skip
    assert oft.images[1] is WRIST and oft.proprio.tolist() == [0.0] * 8 and oft.proprio.dtype == np.float64
    vlaeval = build_request(
        {"images": {"agentview": IMAGE, "wrist": WRIST}, "task_description": "go", "states": np.arange(8)},
        ObservationKeys("vla-eval", ("primary", "wrist")), 8, _resolve,
    )  # fmt: skip
    assert (
        vlaeval.images[0] is IMAGE
        and vlaeval.images[1] is WRIST
        and vlaeval.proprio.tolist() == list(range(8))
    )
    # keys the model does not read are ignored (an openpi client sends a state to a model without proprio)
    openpi = build_request({"observation/image": IMAGE, "prompt": "go", "observation/state": "junk"},
                           ObservationKeys("openpi", ("primary",)), 0, _resolve)  # fmt: skip
    assert openpi.proprio is None


def test_every_problem_is_reported_at_once():
    with pytest.raises(RequestError) as info:
        build_request(
            {"image": IMAGE.astype(np.float32), "wrist": WRIST, "state": [1.0, float("nan")], "unnorm_key": "bridge"},
            ObservationKeys("rest", ("primary", "wrist")), 2, _resolve,
        )  # fmt: skip
    message = info.value.message
    assert (
        "primary image (image|full_image) must be an HxWx3 uint8 array, got shape [8, 10, 3] dtype float32"
        in message
    )
    assert (
        "missing wrist: looked for key 'wrist_image' (change it with --obs_keys '[rest.wrist=KEY]')"
        in message
    )
    assert "the observation has keys: image, state, unnorm_key, wrist" in message
    assert "missing instruction" in message
    assert "proprio contains NaN" in message
    assert "unknown unnorm_key 'bridge'" in message and "bridge_orig" in message
    assert info.value.status == 422


@pytest.mark.parametrize(
    "obs, message",
    [
        ([1, 2], "must be a map"),
        ({"image": IMAGE[..., :2], "instruction": "go"}, r"got shape \[8, 10, 2\]"),
        ({"image": np.zeros((5000, 2, 3), np.uint8), "instruction": "go"}, "between 1 and 4096"),
        ({"image": [[1, 2, 3]], "instruction": "go"}, "got a list of 1 items"),
        ({"image": IMAGE, "instruction": "   "}, "instruction is empty"),
        ({"image": IMAGE, "instruction": 5}, "instruction must be a string"),
        ({"image": IMAGE, "instruction": "x" * 5000}, "at most 2000"),
        ({"image": IMAGE, "instruction": "go", "unnorm_key": 3}, "unnorm_key must be a string or null"),
    ],
)
def test_invalid_fields(obs, message):
    with pytest.raises(RequestError, match=message):
        build_request(obs, ObservationKeys("rest", ("primary",)), 0, _resolve)


def test_proprio_shape_and_type():
    keys = ObservationKeys("rest", ("primary",))
    for state, message in [
        ([1.0] * 3, r"shape \[2\]"),
        ("ab", "numeric array"),
        (np.array([1, 2j]), "numeric"),
    ]:
        with pytest.raises(RequestError, match=message):
            build_request({"image": IMAGE, "instruction": "go", "state": state}, keys, 2, _resolve)
