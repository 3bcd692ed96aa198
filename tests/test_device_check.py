"""scripts/device_check.py on the CPU (--cpu-dry-run): the stream section times what a user runs,
edgescene.runtime.reconstruct.run, at exactly the model input size."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_check.py"
spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
device_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(device_check)


@pytest.mark.slow  # ~6 s on 2 idle cores: a torch model opened and run 7 times
def test_cpu_dry_run_of_the_stream_section(tmp_path):
    argv = [str(tmp_path), "--cpu-dry-run", "--model", "vggt_tiny", "--skip", "pytest,vggt_1b,threads"]
    assert device_check.main([*argv, "--stream-frames", "32"]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    stream = report["sections"]["stream"]
    assert "error" not in stream, stream.get("traceback")
    assert stream["frames"] == 32 and stream["window"] == 8 and stream["windows"] == 5  # 8 + 4 x 6 new frames
    assert stream["fusion_backend"] in ("compiled", "numpy")
    assert "reconstruct.run" in stream["what"]
    assert set(stream["modes"]) == {"sequential", "pipelined"}
    for mode in stream["modes"].values():
        assert mode["total_s"] > 0 and mode["model_busy_s"] > 0 and mode["frames_per_s"] > 0
        assert {"align_s", "fusion_s", "input_s", "fraction_of_model_only_throughput"} <= set(mode)
        assert 0 < mode["steady_state_model_busy"] <= 1.0  # the model's share of the middle windows' wall time
    assert any("reconstruct.py" in line for line in stream["profile_top_cumulative"])
    assert "reconstruct.run" in (tmp_path / "device_check.md").read_text()
    assert "Steady state" in (tmp_path / "device_check.md").read_text()
