"""The web app's working folder: user checkpoints, training runs, exported models, reconstructions.

    workspace/
      checkpoints/<name>.pth|.pt|.safetensors   uploaded or downloaded weights, each with <name>.json (its check)
      runs/<name>/                              training runs (last.pt, metrics.jsonl, train.log)
      models/<name>/                            exported artifacts (offered for reconstruction)
      reconstructions/<id>/                     a reconstruction's cache and renders

Uploaded checkpoints are checked before they are kept: they must load (``weights_only`` /
safetensors) and match a DINOv3 or VGGT preset key for key
(:func:`edgescene.models.weights.inspect.inspect_checkpoint`). Nothing is overwritten: a name
already taken by a different file gets a numbered suffix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _require_torch(job: str) -> None:
    if importlib.util.find_spec("torch") is None:  # checked, not imported: the train layer imports it
        raise RuntimeError(f"{job} needs PyTorch: pip install 'edgescene[torch]' (the CPU wheel is enough)")


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        for sub in ("checkpoints", "runs", "models", "reconstructions"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def reconstructions_dir(self) -> Path:
        return self.root / "reconstructions"

    # -- checkpoints -------------------------------------------------------------------------
    def add_checkpoint(self, source: str | Path, name: str | None = None) -> dict:
        """Check ``source`` and copy it into ``checkpoints/``; returns its report (family, preset, ...).

        Raises ValueError (bad type or a file that is not a DINOv3 / VGGT checkpoint) naming the problem.
        """
        source = Path(source)
        suffix = source.suffix.lower()
        if suffix not in CHECKPOINT_SUFFIXES:
            raise ValueError(
                f"{source.name}: expected a {', '.join(CHECKPOINT_SUFFIXES)} checkpoint, got "
                f"{suffix or 'no extension'!r}"
            )
        _require_torch("checking a checkpoint")
        from edgescene.train.checkpoints import inspect_checkpoint

        try:
            report = inspect_checkpoint(source)
        except Exception as exc:
            raise ValueError(f"{source.name} is not a usable DINOv3 or VGGT checkpoint: {exc}") from exc
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or source.name).stem).strip("._") or "checkpoint"
        digest = _sha256(source)
        target = self.checkpoints_dir / f"{stem}{suffix}"
        n = 1
        while target.exists():
            if _sha256(target) == digest:
                report["note"] = "already in the workspace"
                break
            n += 1
            target = self.checkpoints_dir / f"{stem}-{n}{suffix}"
        if not target.exists():
            shutil.copyfile(source, target)
        report.update(file=str(target), name=target.name, sha256=digest)
        target.with_suffix(".json").write_text(json.dumps(report, indent=1))
        return report

    def download_vggt(self, repo_id: str, filename: str | None) -> dict:
        """Fetch a VGGT checkpoint from the Hugging Face Hub (fails fast offline) and add it."""
        _require_torch("downloading VGGT")
        from edgescene.train.checkpoints import download_vggt

        repo_id = (repo_id or "").strip()
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
            raise ValueError(f"repo id must look like 'owner/name' (e.g. facebook/VGGT-1B), got {repo_id!r}")
        path = download_vggt(repo_id, (filename or "").strip() or None)
        return self.add_checkpoint(path, name=f"{repo_id.replace('/', '_')}_{path.stem}")

    def checkpoints(self) -> list[dict]:
        """The checked checkpoints: name, family, preset, parameters, size (from each one's report)."""
        rows = []
        for report_path in sorted(self.checkpoints_dir.glob("*.json")):
            try:
                report = json.loads(report_path.read_text())
            except json.JSONDecodeError:
                continue
            if Path(report.get("file", "")).exists():
                rows.append(report)
        return rows

    def runs(self) -> list[Path]:
        return sorted(p for p in self.runs_dir.iterdir() if (p / "last.pt").exists())

    def run_dir(self, name: str) -> Path:
        clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "").strip("._")
        if not clean:
            raise ValueError("give the run a name (letters, digits, '.', '_' or '-')")
        return self.runs_dir / clean


__all__ = ["CHECKPOINT_SUFFIXES", "Workspace"]
