import numpy as np
import pytest

from prismatic.normalization import NormalizationType, normalize, resolve_unnorm_key, unnormalize

STATS = {
    "mean": [0.1, -0.2, 0.0], "std": [0.5, 0.25, 1.0], "min": [-1.0, -2.0, 0.0], "max": [1.0, 2.0, 1.0],
    "q01": [-0.8, -1.5, 0.0], "q99": [0.9, 1.5, 1.0], "mask": [True, True, False],
}  # fmt: skip


def test_bounds_q99_formula_and_mask():
    x = np.array([[0.3, 0.0, 1.0], [5.0, -5.0, 0.0]], np.float32)
    out = normalize(x, STATS)
    expected0 = 2 * (0.3 + 0.8) / (0.9 + 0.8 + 1e-8) - 1
    assert out[0, 0] == pytest.approx(expected0, rel=1e-6)
    assert out[1, 0] == 1.0 and out[1, 1] == -1.0  # clipped
    assert out[0, 2] == 1.0 and out[1, 2] == 0.0  # masked dimension untouched


def test_unnormalize_inverts_inside_bounds():
    rng = np.random.default_rng(1)
    for kind in NormalizationType:
        x = rng.uniform([-0.7, -1.4, 0.0], [0.8, 1.4, 1.0], size=(50, 3))
        back = unnormalize(normalize(x, STATS, kind), STATS, kind)
        np.testing.assert_allclose(back, x, atol=1e-5, err_msg=str(kind))


def test_constant_dimension_maps_to_zero():
    stats = {**STATS, "min": [0.3, -2.0, 0.0], "max": [0.3, 2.0, 1.0]}
    out = normalize(np.array([[0.3, 0.0, 1.0]]), stats, "bounds")
    assert out[0, 0] == 0.0


def test_parse_lists_choices():
    assert NormalizationType.parse("BOUNDS_Q99") is NormalizationType.BOUNDS_Q99
    with pytest.raises(ValueError, match="normal, bounds, bounds_q99"):
        NormalizationType.parse("minmax")


def test_resolve_unnorm_key_one_owner_for_model_and_evaluation():
    stats = {"bridge_orig": {}, "libero_goal_no_noops": {}}
    assert resolve_unnorm_key(stats, "bridge_orig") == "bridge_orig"
    assert resolve_unnorm_key({"only": {}}) == "only"  # one dataset: no key needed
    # the evaluation's fallback is an explicit option; without it the exact name is required
    assert resolve_unnorm_key(stats, "libero_goal", try_suffixes=("_no_noops",)) == "libero_goal_no_noops"
    with pytest.raises(KeyError, match=r"'libero_goal' is not in .* available: bridge_orig, libero_goal_no_noops"):
        resolve_unnorm_key(stats, "libero_goal")
    with pytest.raises(KeyError, match=r"'libero_10' \(or 'libero_10_no_noops'\) is not in"):
        resolve_unnorm_key(stats, "libero_10", try_suffixes=("_no_noops",))
    with pytest.raises(KeyError, match="trained on 2 datasets; pass unnorm_key=.*bridge_orig, libero_goal_no_noops"):
        resolve_unnorm_key(stats)
    with pytest.raises(KeyError, match="no normalisation statistics"):
        resolve_unnorm_key({}, "bridge_orig")
