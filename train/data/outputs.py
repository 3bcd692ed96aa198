"""Where ``edgescene preprocess`` puts its outputs and how it writes them.

Outputs are named after the source path (``images/<base>.png``, ``tiles/<base>/x<X>_y<Y>.png``,
``videos/<base>/f<frame>.png``). Every file is written atomically, and the outputs of one source
are written all or none. A file that the previous manifest does not list is never replaced without
``--overwrite``; a byte-identical one (as an interrupted run leaves) is adopted as it is.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from edgescene.core.atomic import atomic_write_bytes
from edgescene.core.manifest import Entry
from edgescene.train.data.readers import ReadError

# ---------------------------------------------------------------- names


def image_path(base: str) -> str:
    return f"images/{base}.png"


def tile_path(base: str, x: int, y: int) -> str:
    return f"tiles/{base}/x{x}_y{y}.png"


def frame_path(base: str, index: int) -> str:
    return f"videos/{base}/f{index:06d}.png"


def is_output_of(path: str, base: str) -> bool:
    """Whether ``path`` is one of the names an output with name stem ``base`` can have."""
    return path == image_path(base) or path.startswith((f"tiles/{base}/", f"videos/{base}/"))


def output_bases(rels: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Output name stem per source: the path without extension, or ``name_ext`` when two sources
    share a stem. Returns (bases, errors for the rare names that still collide)."""
    stems: dict[str, list[str]] = {}
    for rel in rels:
        stems.setdefault(posixpath.splitext(rel)[0], []).append(rel)
    bases, owner, errors = {}, {}, {}
    for rel in rels:
        stem, ext = posixpath.splitext(rel)
        base = stem if len(stems[stem]) == 1 else f"{stem}_{ext.lstrip('.')}"
        if base in owner:
            errors[rel] = f"output name {base!r} is already used by {owner[base]}; rename one of them"
            continue
        owner[base] = rel
        bases[rel] = base
    return bases, errors


# ---------------------------------------------------------------- writing


def write_outputs(rendered: list[tuple[Entry, bytes]], output_dir: Path, overwrite: bool, owned: frozenset[str]) -> int:
    """Write every output of one source, or none: foreign files are checked before anything is written.

    ``owned`` holds the output paths the previous manifest lists (ours to replace). Returns the
    number of files written; raises ReadError (the source's error record) for foreign files.
    """
    plan, foreign = [], []
    for entry, data in rendered:
        target = output_dir / entry.path
        if target.is_file() and target.read_bytes() == data:
            continue  # identical already (ours, or adopted from an interrupted run): leave it untouched
        if target.exists() and not overwrite and entry.path not in owned:
            foreign.append(entry.path)
        plan.append((target, data))
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ReadError(
            f"output {foreign[0]}{more} already exists and is not listed in the output folder's "
            f"manifest; not overwritten: pass --overwrite to replace it"
        )
    written: list[Path] = []
    try:
        for target, data in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
            written.append(target)
    except BaseException:
        for target in written:  # leave no half-written source behind
            target.unlink(missing_ok=True)
        raise
    return len(written)
