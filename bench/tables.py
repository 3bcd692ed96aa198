"""What the row benches (metric_scale, known_intrinsics, gps_priors, self_supervised_diagnosis)
write: every row as JSON beside the Markdown table made from them, written atomically, the table
also printed; and the run's meta (date, machine, the command as typed)."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
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


def run_meta(module: str, argv: list[str] | None, **fields: Any) -> dict:
    """The meta of a bench run: today's date, the machine, the command (``python -m module`` and
    ``argv``, or the process's own arguments when None, quoted as a shell needs them), then ``fields``."""
    args = sys.argv[1:] if argv is None else argv
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "command": " ".join(["python -m " + module, *map(shlex.quote, args)]),
        **fields,
    }
