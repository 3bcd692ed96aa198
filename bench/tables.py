"""What the row benches (metric_scale, known_intrinsics, gps_priors) write: every row as JSON beside
the Markdown table made from them, written atomically, the table also printed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgescene.core.atomic import atomic_write_text


def write_rows(folder: Path, json_name: str, md_name: str, meta: dict, rows: list, summary: Any, table: str) -> None:
    """``folder/json_name``: ``{"meta", "rows" (dataclasses as dicts), "summary"}``; ``folder/md_name``: ``table``."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"meta": meta, "rows": [asdict(r) for r in rows], "summary": summary}
    atomic_write_text(folder / json_name, json.dumps(record, indent=1))
    atomic_write_text(folder / md_name, table)
    print(table)
