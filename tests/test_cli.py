"""The ``edgescene`` command: help, the model table, checkpoint inspection and error reporting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from bundled import BUNDLED_LABEL, BUNDLED_PRESET

from edgescene.cli import main
from edgescene.models.vggt import build_vggt


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgescene", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    assert "models" in result.stdout and "inspect" in result.stdout


def test_models_table_lists_every_preset_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, count in [
        ("vggt_1b", "1,256,537,516"),
        ("dinov3_vits16", "21,601,152"),
        ("dinov3_vitl16", "303,154,176"),
        ("dinov3_vit7b16", "6,716,043,264"),
        ("dinov3_vitl16_sat493m", "303,156,224"),
    ]:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert count in line, line
    for name in (
        "vggt_tiny",
        "vggt_tiny_dinov3",
        "dinov3_tiny",
        "dinov3_vits16plus",
        "dinov3_vitb16",
        "dinov3_vitl16plus",
        "dinov3_vith16plus",
        "dinov3_vit7b16_sat493m",
    ):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name


def test_models_json_filter(capsys):
    assert main(["models", "--family", "vggt", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"vggt_1b", "vggt_small", "vggt_small_motion", "vggt_tiny", "vggt_tiny_dinov3"}
    assert next(r for r in rows if r["name"] == "vggt_1b")["parameters"] == 1_256_537_516


def test_inspect_identifies_a_checkpoint(tmp_path, capsys):
    torch.save(build_vggt("vggt_tiny").state_dict(), tmp_path / "model.pt")
    assert main(["inspect", str(tmp_path / "model.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "vggt" and report["preset"] == "vggt_tiny"
    assert report["heads"] == "camera, depth, point, track"


def test_errors_are_one_clear_line_and_exit_2(tmp_path):
    result = run("inspect", str(tmp_path / "missing.pth"))
    assert result.returncode == 2
    assert result.stderr.startswith("edgescene inspect: error: checkpoint not found")
    assert "Traceback" not in result.stderr


def test_synth_command_writes_a_dataset_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path / "d"), "--scenes", "2", "--frames", "3", "--width", "48", "--height", "32"]
    assert main(args) == 0
    assert "2 scenes, 6 frames" in capsys.readouterr().out
    assert (tmp_path / "d" / "manifest.json").is_file()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--trajectories", "spiral", "--overwrite"]) == 2


def _use_hub_cache(monkeypatch, folder) -> None:
    """Point huggingface_hub at ``folder`` (its constants are read at import: patch them too)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))


def _fake_hub_cache(root, repo_id: str, filename: str, source) -> None:
    """A Hugging Face cache holding ``repo_id/filename`` (what a previous online download leaves)."""
    import shutil

    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copyfile(source, snapshot / filename)


def test_download_copies_a_checked_checkpoint_and_never_overwrites(tmp_path, monkeypatch, capsys):
    from edgescene.assets import default_model_dir

    weights = default_model_dir() / "model.safetensors"
    _use_hub_cache(monkeypatch, tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_hub_cache(tmp_path / "hub", "me/vggt-small", "model.safetensors", weights)
    target = tmp_path / "models"
    assert main(["download", "--repo-id", "me/vggt-small", "--target-dir", str(target)]) == 0
    assert (target / "model.safetensors").read_bytes() == weights.read_bytes()
    assert f"vggt preset {BUNDLED_PRESET}," in capsys.readouterr().out
    (target / "model.safetensors").write_bytes(b"someone else's file")
    assert main(["download", "--repo-id", "me/vggt-small", "--target-dir", str(target)]) == 2
    assert "differs" in capsys.readouterr().err
    assert (target / "model.safetensors").read_bytes() == b"someone else's file"


def test_download_offline_fails_fast_with_the_fix(tmp_path, monkeypatch, capsys):
    _use_hub_cache(monkeypatch, tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", "--target-dir", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "edgescene download --repo-id facebook/VGGT-1B" in err
    assert not (tmp_path / "models").exists()


def test_errors_are_one_line_unless_debug(tmp_path):
    args = ["reconstruct", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "out")]
    plain = run(*args)
    assert plain.returncode == 2 and plain.stderr.strip().count("\n") == 0 and "Traceback" not in plain.stderr
    assert "does not exist" in plain.stderr
    debug = run("--debug", *args)
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_the_web_app_is_not_exposed_without_a_password(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGESCENE_APP_AUTH", raising=False)
    assert main(["app", "--share", "--workspace", str(tmp_path / "ws")]) == 2
    assert "without a password" in capsys.readouterr().err
    assert main(["app", "--host", "0.0.0.0", "--workspace", str(tmp_path / "ws")]) == 2
    assert main(["app", "--auth", "me:short", "--workspace", str(tmp_path / "ws")]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


def test_reconstruct_profile_prints_each_window_and_the_ratio(tmp_path, capsys):
    from edgescene.assets import sample_dir

    out = tmp_path / "rec"
    args = ["reconstruct", str(sample_dir() / "sample.mp4"), "--out", str(out), "--max-frames", "14", "--profile"]
    assert main(args) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    lines = [line for line in text.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert len(lines) == report["windows"] == 2  # windows of 8 with overlap 2: 8 + 6 frames
    assert [int(line.split()[1]) for line in lines] == [8, 6]  # new frames per window
    assert "x the model's" in text and "pipeline on" in text
    assert report["model_busy_steady_state"] is None and "model busy" not in text  # 2 windows: no steady state
    assert main([*args[:-1], "--no-pipeline", "--overwrite"]) == 0
    assert "pipeline off" not in capsys.readouterr().out  # --profile not given: no table
    assert json.loads((out / "report.json").read_text())["config"]["pipeline"] is False


def test_reconstruct_and_eval_take_fast_attention(tmp_path, capsys):
    from edgescene.assets import default_model_dir, sample_dir

    checkpoint = str(default_model_dir() / "model.safetensors")
    out = tmp_path / "rec"
    args = ["reconstruct", str(sample_dir() / "sample.mp4"), "--model", checkpoint, "--out", str(out)]
    assert main([*args, "--max-frames", "10", "--fast-attention"]) == 0
    text = capsys.readouterr().out
    assert "fast attention on (token merging" in text
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["fast_attention"]["stride"] == 2 and report["config"]["fast_attention"] is True
    assert any("fast attention" in note for note in report["model_notes"])
    # the bundled model is an exact export: asking for fast attention says how to get it
    assert (
        main(["reconstruct", str(sample_dir() / "sample.mp4"), "--out", str(tmp_path / "x"), "--fast-attention"]) == 2
    )
    assert "re-export with `edgescene export ... --fast-attention`" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["eval", "--model", checkpoint, "--dataset", "middlebury-motorcycle", "--fast-attention"]) == 0
    assert "AbsRel" in capsys.readouterr().out


def test_every_option_of_every_command_has_help_and_shows_its_default():
    import argparse

    from edgescene.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert len(commands) >= 10
    problems = []
    for name, sub in commands.items():
        text = sub.format_help()  # renders: every help string is %-safe
        assert text.startswith(f"usage: edgescene {name}"), name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                problems.append(f"{label}: no help text")
                continue
            shown = sub._get_formatter()._get_help_string(action)
            meaningful = action.default not in (None, False, argparse.SUPPRESS, [])
            if meaningful and action.option_strings and "default" not in shown.lower():
                problems.append(f"{label}: default {action.default!r} not shown")
    assert problems == []
    assert "(default: 8000)" in commands["serve"].format_help() and "TCP port" in commands["serve"].format_help()
    assert "formats (name, precisions" in commands["export"].format_help()  # the epilog keeps its lines


def test_errors_name_the_flags_not_the_python_names(tmp_path, capsys):
    from edgescene.assets import sample_dir

    video = str(sample_dir() / "sample.mp4")
    for flags, expected in (
        (["--every", "-1"], "error: --every must be a positive number of seconds"),
        (["--conf-percentile", "120"], "error: --conf-percentile must be in [0, 100]"),
    ):
        assert main(["reconstruct", video, "--out", str(tmp_path / "o"), *flags]) == 2
        err = capsys.readouterr().err
        assert expected in err and "every_s" not in err and "conf_percentile" not in err, err


def test_in_flags_replaces_only_snake_case_option_names():
    import argparse

    from edgescene.cli import in_flags

    p = argparse.ArgumentParser()
    p.add_argument("--every", dest="every_s", type=float)
    p.add_argument("--max-frames", type=int)
    p.add_argument("--model")
    text = "every_s must be > 0; max_frames too; the model is fine; my_max_frames and every_s_x stay"
    assert (
        in_flags(text, p)
        == "--every must be > 0; --max-frames too; the model is fine; my_max_frames and every_s_x stay"
    )


def test_export_of_an_artifact_folder_points_at_the_checkpoint_inside(tmp_path, capsys):
    from edgescene.assets import default_model_dir

    folder = default_model_dir()
    assert main(["export", "--model", str(folder), "--format", "onnx", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert f"pass the one inside it, --model {folder / 'model.safetensors'}" in err and "unknown model" not in err
    (tmp_path / "empty").mkdir()
    assert main(["export", "--model", str(tmp_path / "empty"), "--format", "onnx", "--out", str(tmp_path / "e")]) == 2
    assert "a folder without a checkpoint" in capsys.readouterr().err


def test_reconstruct_names_the_model_first_and_reaches_100_percent_only_with_the_outputs(tmp_path):
    """The real CLI process, stdout and stderr as a terminal shows them (one stream, in order)."""
    import re
    import time

    from edgescene.assets import sample_dir

    out = tmp_path / "rec"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgescene", "reconstruct", str(sample_dir() / "sample.mp4"), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    text = ""
    hundred_with_outputs = []  # each time "100%" is read: were the outputs there?
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        chunk = process.stdout.read(64)
        if not chunk:
            break
        text += chunk
        if "100%" in text and not hundred_with_outputs:
            hundred_with_outputs.append((out / "report.json").is_file())
    assert process.wait(timeout=30) == 0, text
    report = json.loads((out / "report.json").read_text())
    shown = text.replace("\r", "\n")
    percentages = [int(p) for p in re.findall(r"reconstruct +(\d+)%", shown)]
    assert percentages == sorted(percentages) and percentages.count(100) == 1, percentages
    assert 97 in percentages  # writing the outputs: short of 100
    assert hundred_with_outputs == [True]
    model_line = shown.index(f"reconstruct: model {BUNDLED_LABEL}; frames fed at 126x168")
    first_window = re.search(r"reconstruct +[1-9]\d*%", shown)  # the first share above 0: a window ran
    assert first_window is not None and model_line < first_window.start()  # named before the first window ran
    assert len(percentages) <= 6  # into a pipe: a redraw per stage and at most one per 10 s, not one per frame
    assert f"done: {report['frames_seen']} frames, {report['keyframes']} keyframes" in shown
    assert shown.index("100%") < shown.index("reconstruct: 32 frames")  # the summary after the bar
