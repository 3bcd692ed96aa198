"""Tests for edgescene.core.order_statistics: numpy's percentile and median, to the bit and the type."""

from __future__ import annotations

import numpy as np
import pytest

from edgescene.core.order_statistics import median, percentile


def _samples(rng: np.random.Generator):
    """Arrays of many sizes (odd, even, 1, 2), dtypes and shapes of distribution, ties included."""
    for trial in range(600):
        n = int(rng.integers(1, 300)) if trial % 10 else int(rng.integers(1, 3))
        dtype = (np.float32, np.float64, np.float16)[trial % 3]
        kind = trial % 4
        if kind == 0:
            a = rng.normal(size=n)
        elif kind == 1:
            a = rng.integers(0, 4, n).astype(np.float64)  # many ties
        elif kind == 2:
            a = rng.uniform(1.0, 10.0, n) ** 3  # a confidence's long tail
        else:
            a = np.full(n, 2.5)
        yield a.astype(dtype)


def test_percentile_is_numpys_to_the_bit():
    rng = np.random.default_rng(0)
    for a in _samples(rng):
        before = a.copy()
        for q in (0.0, 100.0, 50.0, 25.0, 75.0, 0.001, 99.999, float(rng.uniform(0, 100)), 50):
            got, want = percentile(a, q), np.percentile(a, q)
            assert got == want and type(got) is type(want), (a.dtype, len(a), q, got, want)
        np.testing.assert_array_equal(a, before)  # the input is not reordered


def test_median_is_numpys_to_the_bit():
    rng = np.random.default_rng(1)
    for a in _samples(rng):
        got, want = median(a), np.median(a)
        assert got == want and type(got) is type(want), (a.dtype, len(a), got, want)
    # the mean of the two middle values is taken in the values' dtype (float32 rounding, as numpy)
    a = np.array([16777216.0, 16777219.0], np.float32)
    assert median(a) == np.median(a) and median(a).dtype == np.float32


@pytest.mark.parametrize(
    ("values", "q", "message"),
    [
        (np.zeros(0, np.float32), 50.0, "at least one value"),
        (np.zeros((2, 2), np.float32), 50.0, "1-D float"),
        (np.arange(4), 50.0, "1-D float"),
        (np.ones(3, np.float32), 100.5, r"in \[0, 100\]"),
        (np.ones(3, np.float32), -1.0, r"in \[0, 100\]"),
    ],
)
def test_bad_input_is_refused_with_the_reason(values, q, message):
    with pytest.raises(ValueError, match=message):
        percentile(values, q)
    if "100" not in message:
        with pytest.raises(ValueError, match=message):
            median(values)
