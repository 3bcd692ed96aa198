"""The window-consistency bench: it tells the model's error inside windows from the chaining's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgescene.assets import default_model_dir
from edgescene.bench import window_consistency
from edgescene.bench.oracle import OracleNoise, OracleSession
from edgescene.bench.synthetic_scene import make_video

BUNDLED_MODEL = default_model_dir()
EXACT = OracleNoise(depth_noise=0.0, rotation_noise_deg=0.0, translation_noise=0.0)


class StretchedTranslations:
    """An exact oracle whose camera translations of call ``k`` are ``factors[k]`` times too long
    (depth untouched): the model disagreeing with itself, window by window."""

    def __init__(self, inner: OracleSession, factors: list[float]) -> None:
        self.inner, self.factors, self.k = inner, factors, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, feeds):
        out = dict(self.inner(feeds))
        pose = np.array(out["pose_enc"], copy=True)
        pose[:, :3] *= self.factors[self.k]  # pose encoding: translation first
        self.k += 1
        out["pose_enc"] = pose
        return out


@pytest.fixture(scope="module")
def video():
    return make_video(20, (56, 84), seed=3)


def _measure(session, video):
    frames = list(video.rgb)
    return window_consistency.measure_sequence(
        session, "walk", frames, video.extrinsics, video.depth, window=6, overlap=2
    )


def test_an_exact_model_chains_exactly(video):
    result = _measure(OracleSession(video, EXACT), video)
    assert result.keyframes == 20 and len(result.windows) == 5  # 6 frames, then 4 new per window (the last 2)
    for w in result.windows:
        assert w.local_ate_rel < 1e-5 and w.steps_over_depth == pytest.approx(1.0, abs=1e-3)  # medians of float32 maps
    assert result.chained_ate_rel < 1e-4 and result.path_ratio == pytest.approx(1.0, abs=1e-4)


def test_it_finds_each_windows_own_translation_scale(video):
    factors = [1.0, 2.0, 0.5, 1.5, 0.8]
    result = _measure(StretchedTranslations(OracleSession(video, EXACT), factors), video)
    got = [w.steps_over_depth for w in result.windows]
    assert got == pytest.approx(factors, rel=1e-3)  # the depth scale is untouched: the ratio is the stretch
    assert all(w.local_ate_rel < 1e-5 for w in result.windows)  # each window alone is still exact
    assert result.chained_ate_rel > 0.02  # chained on points, the stretched steps bend the trajectory (0.039)


def test_the_bundled_model_on_the_sample_matches_its_card():
    card = json.loads((BUNDLED_MODEL / "eval.json").read_text())["sample_video"]
    from edgescene.runtime.session import open_session

    session = open_session(BUNDLED_MODEL)
    try:
        result = window_consistency.measure_sequence(session, *window_consistency.sample_sequence())
    finally:
        session.close()
    assert result.keyframes == card["keyframes"]
    assert result.chained_ate_rel == pytest.approx(card["ate_rel"], abs=5e-3)
    assert len(result.windows) == 5
    ratios = [w.steps_over_depth for w in result.windows]
    assert 0.9 < min(ratios) < 1.1 and 1.8 < max(ratios) < 2.4  # measured 0.97 and 2.08


def test_cli_writes_every_window(tmp_path, capsys):
    out = tmp_path / "wc.json"
    assert (
        window_consistency.main(["--model", str(BUNDLED_MODEL), "--no-sample", "--synthetic", "1", "--out", str(out)])
        == 0
    )
    data = json.loads(out.read_text())
    assert [s["name"] for s in data["sequences"]] == ["orbit_9100"]
    assert len(data["sequences"][0]["windows"]) >= 5 and "| orbit_9100 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        window_consistency.main(["--model", str(BUNDLED_MODEL), "--no-sample", "--synthetic", "0"])
