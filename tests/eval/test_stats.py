"""Wilson 95% intervals against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from prismatic.eval.stats import SuccessStats, wilson_interval


def test_wilson_7_of_10_by_hand():
    # p = 0.7, z = 1.96: denom = 1 + 3.8416/10 = 1.38416
    # centre = (0.7 + 3.8416/20) / 1.38416 = 0.644492; half = 1.96 * sqrt(0.021 + 0.009604) / 1.38416 = 0.247718
    lo, hi = wilson_interval(7, 10, z=1.96)
    assert lo == pytest.approx(0.39677, abs=1e-5)
    assert hi == pytest.approx(0.89221, abs=1e-5)


def test_wilson_edges_and_default_z():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(1.959964**2 / (50 + 1.959964**2), abs=1e-6)  # z^2 / (n + z^2)
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(50 / (50 + 1.959964**2), abs=1e-6)
    lo, hi = wilson_interval(25, 50)
    assert (lo + hi) / 2 == pytest.approx(0.5) and hi - lo == pytest.approx(
        2 * 1.959964 * math.sqrt(0.25 / 50 + 1.959964**2 / 10000) / (1 + 1.959964**2 / 50), abs=1e-6
    )


@pytest.mark.parametrize("k,n", [(-1, 3), (4, 3), (1, -1)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(k, n)


def test_success_stats_dict():
    d = SuccessStats("t", 4, 3, "do it").to_dict()
    assert d["success_rate"] == 0.75 and d["instruction"] == "do it"
    assert 0 < d["ci95_low"] < 0.75 < d["ci95_high"] < 1
