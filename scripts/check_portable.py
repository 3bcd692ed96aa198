"""The portability gate (``make lint``): nothing in the repository depends on the machine that wrote it.

A clone must install and run anywhere, so two kinds of file are checked:

1. **Requirement files** (``constraints.txt``, ``*requirements*.txt``): every line is ``name==version``
   (extras and an environment marker allowed). Refused, with the line and the fix:
   a ``file:`` URL, a ``name @ URL`` direct reference, a path, a pip option (``--find-links``,
   ``--index-url``, ``-e`` ...), and a local version label (``torch==2.13.0+cpu``: only a custom index
   has it, and it rules out every other build of that version).
2. **Shipped files** (every tracked file, text or binary, except the tests' Python code, which builds
   such paths on purpose): no absolute path into a home, work or temporary folder of the machine
   that made the file (``/home/<user>``, ``/root``, ``/Users/<user>``, ``/tmp``, ``/work``, ``/var/folders``,
   ``C:\\Users``). An artifact, a report or a document names files relative to itself or by name.

Usage::

    python scripts/check_portable.py [ROOT]     # exit 1 and one line per finding; 0 when clean

Files are those git tracks under ROOT (all files but .git, virtual environments and build outputs when
ROOT is not a git checkout).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REQUIREMENT_FILE = re.compile(r"(^|/)(constraints[^/]*|[^/]*requirements[^/]*)\.txt$")
PINNED = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*"  # name
    r"(\[[A-Za-z0-9._,\s-]+\])?"  # extras
    r"==[0-9][0-9A-Za-z.!*-]*"  # an exact public version (no local "+label")
    r"(\s*;\s*[^@#]+)?$"  # environment marker
)
# An absolute path into a folder that belongs to one machine: not preceded by a word character, a dot or a
# slash (so "runs/work/x" and URLs do not count), or behind a file: URL.
MACHINE_PATH = re.compile(
    rb"(?:(?<![\w.~/:-])|file://)/(?:tmp|root|home|work|Users|var/folders|private/var/folders)/[\w]"
    rb"|\b[A-Za-z]:\\\\?Users\\"
)
SKIPPED_DIRS = {".git", ".venv", ".venv-triton", "build", "dist", "out", "__pycache__", ".pytest_cache"}


def tracked_files(root: Path) -> list[Path]:
    """The files git tracks under ``root`` (every file outside build outputs when it is not a checkout)."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and not SKIPPED_DIRS.intersection(p.relative_to(root).parts) and not p.is_symlink()
        )
    return [root / name for name in listed.decode().split("\0") if name and (root / name).is_file()]


def check_requirement_line(line: str) -> str | None:
    """Why ``line`` of a requirement file would not install the same way everywhere, or None."""
    text = line.split(" #", 1)[0].strip()
    if not text or text.startswith("#"):
        return None
    if "file:" in text:
        return "a file: URL points into the machine that wrote it; pin the release instead: name==version"
    if "@" in text:
        return "a direct reference (name @ URL) bypasses the package index; pin the release: name==version"
    if text.startswith("-"):
        return "a pip option belongs on the command line (Makefile), not in a requirement file"
    if "/" in text or "\\" in text:
        return "a path is not a requirement; pin the release: name==version"
    if re.match(r"^[^;]*==[^;]*\+", text):
        return "a local version label (+cpu, +cu130) exists only on a custom index; pin the public version"
    if not PINNED.match(text):
        return "not an exact pin; write name==version"
    return None


def check(root: Path) -> list[str]:
    """Every finding under ``root`` as ``path:line: problem`` (``path: ...`` for binary files)."""
    findings: list[str] = []
    for path in tracked_files(root):
        rel = path.relative_to(root).as_posix()
        if REQUIREMENT_FILE.search(rel):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                problem = check_requirement_line(line)
                if problem:
                    findings.append(f"{rel}:{number}: {problem}: {line.strip()}")
        if rel.startswith("tests/") and rel.endswith(".py"):
            continue
        data = path.read_bytes()
        match = MACHINE_PATH.search(data)
        if match is None:
            continue
        if b"\0" in data[:8192]:  # binary (an ONNX model's metadata, an archive): say where, once
            snippet = data[match.start() : match.start() + 60].split(b"\0")[0].decode(errors="replace")
            findings.append(f"{rel}: binary file carries a machine-local absolute path: {snippet!r}")
            continue
        for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line.encode()):
                findings.append(
                    f"{rel}:{number}: a machine-local absolute path (write it relative, or the file name): "
                    f"{line.strip()[:160]}"
                )
    return findings


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else Path(__file__).resolve().parents[1]
    findings = check(root)
    for finding in findings:
        print(f"check_portable: {finding}")
    if findings:
        print(f"check_portable: {len(findings)} finding(s): the repository would not install or read the same anywhere")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
