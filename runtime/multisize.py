"""Artifacts that serve several input sizes: one sub-artifact per size, one session in front.

``edgescene export --sizes 294x518,392x518,518x518`` writes a folder whose ``artifact.json`` lists
``input_sizes`` and ``files["sizes"]`` (``"HxW" -> sub-folder``); each sub-folder is a complete
artifact of the same format, accepted by the parity gate at its size (and, for TensorRT, an engine
whose profile is that size). :class:`MultiSizeSession` opens a size's sub-artifact when images of
that size first arrive, and sends every call to the one that serves ``images``' H and W, so the
runtime can feed each video at upstream's size. Imports numpy and the runtime core only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgescene.core.artifact import Artifact, ArtifactError, size_key
from edgescene.runtime.backends import BaseSession, check_feeds

if TYPE_CHECKING:
    from edgescene.runtime.session import Session


class MultiSizeSession(BaseSession):
    """Sessions of one multi-size artifact folder, opened per size on first use.

    ``open_sub(folder)`` opens one sub-artifact (``open_session`` with this session's device and
    options). The primary size (``artifact.input_size``) is opened at once, so a missing backend or
    a bad device fails here, not at the first frame.
    """

    def __init__(self, folder: str | Path, artifact: Artifact, open_sub: Callable[[Path], Session]) -> None:
        self.artifact = artifact
        self._folder = Path(folder)
        self._open_sub = open_sub
        sizes = artifact.files.get("sizes") or {}
        if not sizes:
            raise ArtifactError(f"{folder}: artifact.json lists no per-size sub-artifacts")
        self._paths = {key: self._folder / sub for key, sub in sizes.items()}
        self._sessions: dict[str, Session] = {}
        first = self._session(size_key(artifact.input_size["height"], artifact.input_size["width"]))
        self.backend = first.backend
        self.device = first.device

    def _session(self, key: str) -> Session:
        if key not in self._sessions:
            if key not in self._paths:
                raise ValueError(f"images are {key}; this artifact serves {self.artifact.describe_sizes()}")
            self._sessions[key] = self._open_sub(self._paths[key])
        return self._sessions[key]

    @property
    def open_sizes(self) -> list[str]:
        """The sizes whose sessions are open (each holds its own weights in memory)."""
        return list(self._sessions)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._sessions is None:
            raise RuntimeError("this session is closed")
        prepared, axes = check_feeds(self.artifact, feeds)
        return self._session(size_key(axes["height"], axes["width"]))(prepared)

    def close(self) -> None:
        for session in (self._sessions or {}).values():
            session.close()
        self._sessions = None  # type: ignore[assignment]


__all__ = ["MultiSizeSession"]
