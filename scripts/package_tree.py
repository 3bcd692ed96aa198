"""Mirror the installed package layout (``edgescene.runtime`` <- ``runtime/`` ...) as a plain tree.

The repository keeps each layer at the top level (``models/``, ``runtime/``, ...) and setuptools maps
them into one ``edgescene`` package (``[tool.setuptools] package-dir`` in pyproject.toml). Tools that
walk a package's folder instead of importing it (import-linter's graph builder, mypy) need that
package as one folder: this script makes ``build/pkg/edgescene/`` with real directories and links
to every ``.py`` file, so edits show through without a rebuild. Prints the folder to put on the path.

    python scripts/package_tree.py            # -> build/pkg
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path = ROOT / "build" / "pkg") -> Path:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = config["package-dir"]
    if out.exists():
        shutil.rmtree(out)
    for package in config["packages"]:
        source = ROOT / mapping.get(package, package.replace(".", "/"))
        target = out / package.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for file in source.glob("*.py"):
            (target / file.name).symlink_to(file)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "pkg"))
