"""Packaging: one import name, the runtime stays free of torch."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("core", "models", "train", "export", "runtime", "bench", "apps", "mapping", "plugins", "trt")


def source_packages() -> set[str]:
    """Every package of the checkout as the wheel must hold it: edgescene/ and, through its links, the
    top-level layers (models/ is edgescene/models/), found on disk rather than listed by hand."""
    root = REPO / "edgescene"
    found = set()
    for folder, _, files in os.walk(root, followlinks=True):  # through the layer links
        if "__init__.py" in files and "__pycache__" not in folder:
            found.add("/".join(("edgescene", *Path(folder).relative_to(root).parts)))
    return found


def test_each_layer_is_linked_into_the_one_package():
    """The design keeps each layer at the top level; edgescene/ links to it so that every tool run from
    the repository root (python, mypy, import-linter, pytest) sees one package."""
    for layer in LAYERS:
        link = REPO / "edgescene" / layer
        assert link.is_symlink() and link.resolve() == (REPO / layer).resolve(), layer
    top_level = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()} - {"edgescene"}
    assert top_level == set(LAYERS), "a new top-level package needs its link in edgescene/"


def test_the_wheel_installs_one_top_level_package(tmp_path):
    """Built as users install it: every package of the tree under edgescene/, nothing generic at the top."""
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
            str(REPO),
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
    packages = source_packages()
    assert len(packages) > 20
    for package in packages:
        assert f"{package}/__init__.py" in names, package
    for asset in ("sample.mp4", "sample_gt.npz", "sample.json"):
        assert f"edgescene/assets/sample/{asset}" in names, asset
    for asset in ("model.onnx", "artifact.json", "eval.json", "MODEL_CARD.md"):
        assert f"edgescene/assets/models/vggt_small_synthetic/{asset}" in names, asset
    assert not any(n.startswith("edgescene/tests") for n in names)


def test_subpackages_import_under_the_edgescene_name():
    for name in LAYERS:
        module = importlib.import_module(f"edgescene.{name}")
        assert module.__name__ == f"edgescene.{name}"


def test_the_package_imports_from_the_repository_root_with_no_install_tricks():
    """Run from the checkout, Python finds edgescene/ there (no shadowing, no -P, no mirror tree)."""
    code = (
        "import edgescene.apps, edgescene.runtime, edgescene.models, edgescene.cli; print(edgescene.runtime.__file__)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == REPO / "edgescene" / "runtime" / "__init__.py"


def test_import_linter_runs_plainly_from_the_repository_root():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    if not lint_imports.exists():
        pytest.skip("import-linter is not installed (the lint extra)")
    result = subprocess.run([str(lint_imports)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


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
