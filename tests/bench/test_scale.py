"""edgescene.bench.scale: growth exponents and labels on exact power laws."""

from __future__ import annotations

import pytest

from edgescene.bench.scale import classify_growth, growth_exponent, stream_label

FRAMES = [1, 2, 4, 8, 16]


@pytest.mark.parametrize(
    "k, label",
    [(0.0, "constant"), (0.5, "sublinear"), (1.0, "linear"), (1.5, "superlinear"), (2.0, "quadratic or worse")],
)
def test_power_laws_get_their_exponent_and_label(k, label):
    ys = [3.0 * n**k for n in FRAMES]
    assert growth_exponent(FRAMES, ys) == pytest.approx(k, abs=1e-9)
    assert classify_growth(FRAMES, ys)["label"] == label


def test_flat_within_tolerance_is_constant_and_too_few_points_is_unknown():
    assert classify_growth(FRAMES, [100, 104, 97, 108, 101])["label"] == "constant"
    assert classify_growth([4], [1.0])["label"].startswith("unknown")
    assert growth_exponent([2, 2], [1.0, 3.0]) is None


def test_stream_label():
    assert stream_label(0.04) == "constant (+4.0 %)"
    assert stream_label(0.37) == "grows (+37.0 %)"
    assert stream_label(-0.2) == "shrinks (-20.0 %)"
