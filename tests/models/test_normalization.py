import numpy as np
import pytest

from prismatic.normalization import NormalizationType, normalize, unnormalize

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
