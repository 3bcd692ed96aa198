"""Packaging: one import name, the runtime stays free of torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path


def test_the_wheel_installs_one_top_level_package(tmp_path):
    """Built as users install it: everything lives under edgescene/, nothing generic at the top."""
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(repo),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = tmp_path.glob("edgescene-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "edgescene",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }
    for package in (
        "models",
        "models/layers",
        "models/vggt",
        "models/weights",
        "runtime",
        "runtime/backends",
        "train",
        "train/data",
        "train/data/synthetic",
        "train/dinov3",
        "train/vggt",
        "export",
        "bench",
        "apps",
        "commands",
        "assets",
    ):
        assert f"edgescene/{package}/__init__.py" in names, package
    for asset in ("sample.mp4", "sample_gt.npz", "sample.json"):
        assert f"edgescene/assets/sample/{asset}" in names, asset
    for asset in ("model.onnx", "artifact.json", "eval.json", "MODEL_CARD.md"):
        assert f"edgescene/assets/models/vggt_small_synthetic/{asset}" in names, asset
    assert not any(n.startswith("edgescene/tests") for n in names)


def test_subpackages_import_under_the_edgescene_name():
    for name in ("core", "models", "runtime", "train", "export", "bench", "apps", "plugins"):
        module = importlib.import_module(f"edgescene.{name}")
        assert module.__name__ == f"edgescene.{name}"


def test_runtime_imports_with_torch_blocked():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import edgescene.runtime\n"
        "from edgescene.runtime import frames, fusion, keyframes, multisize, outputs, preprocess\n"
        "from edgescene.runtime import reconstruct, scene, session, stream\n"
        "from edgescene.core import artifact, geometry, manifest\n"
        "from edgescene.runtime.backends import onnxruntime, tensorrt\n"
        "for layer in ('models', 'export', 'train', 'plugins'):\n"
        "    assert not any(m.startswith('edgescene.' + layer) for m in sys.modules), layer\n"
        "import edgescene.cli  # the CLI (which may import every layer) also builds without torch\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cli_help_needs_no_torch():
    code = "import sys; sys.modules['torch'] = None\nfrom edgescene.cli import main\nraise SystemExit(main(['--help']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "inspect" in result.stdout
