"""Progress of one reconstruction: the one model the CLI bar, the web app, a job's ``progress`` and
the live ``/stream`` replies all show.

A run moves through stages, in order::

    opening         the model is being opened (before the first frame)
    reconstructing  frames are decoded and selected; every few keyframes the model runs one window
    finishing       the last, partial window runs and the map takes it
    closing loops   loop closure corrects cameras and map (only with loop closure)
    metric scale    the map is fitted to known positions and put in metres (only with a scale source)
    writing         the output files are written (only for a folder)
    done            everything is written: the only stage at ``fraction`` 1.0

``fraction`` (0..1) counts the input frames whose keyframes the model has already run and fused,
over the frames the input is expected to hold, so it does not run ahead of the model while frames
are decoded ahead of it; it stays at :data:`MODEL_SHARE` through finishing and loop closure and at
:data:`WRITE_SHARE` while files are written. It is None where the input's length is unknown (a live
stream, a video whose header does not say). ``eta_s`` is given from the first window on: the seconds
so far scaled by what is left. Numpy-free and torch-free: the runtime core's standard library only.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import IO, Any, Literal

Stage = Literal["opening", "reconstructing", "finishing", "closing loops", "metric scale", "writing", "done"]
STAGES: tuple[Stage, ...] = (
    "opening",
    "reconstructing",
    "finishing",
    "closing loops",
    "metric scale",
    "writing",
    "done",
)
MODEL_SHARE = 0.95  # of the bar for the frames through the model; the rest is loop closure and the files
WRITE_SHARE = 0.97  # where the bar stands while the output files are written


@dataclass(frozen=True)
class Progress:
    """Where a run stands (see the module's docstring for the stages and ``fraction``).

    ``frames_seen``: input frames decoded so far; ``frames_expected``: what the input should hold
    (None: unknown); ``frames_done``: input frames whose keyframes the model has run and the map has
    taken; ``keyframes``: keyframes in the map; ``windows``: model calls done; ``elapsed_s``: seconds
    since the first frame was asked for (0 while opening); ``model``: "preset (format precision) on
    backend/device", known from the first keyframe on; ``input_hw``: the (H, W) the frames are fed
    at, from the first keyframe on.
    """

    stage: Stage
    frames_seen: int = 0
    frames_expected: int | None = None
    frames_done: int = 0
    keyframes: int = 0
    windows: int = 0
    elapsed_s: float = 0.0
    fraction: float | None = None
    eta_s: float | None = None
    model: str | None = None
    input_hw: tuple[int, int] | None = None

    def message(self) -> str:
        """One line a person reads: "frame 40 of 120, 3 model calls, about 12 s left"."""
        if self.stage == "opening":
            return "opening the model"
        if self.stage == "done":
            return f"done: {self.frames_seen} frames, {self.keyframes} keyframes, {_calls(self.windows)}"
        of = f" of {self.frames_expected}" if self.frames_expected is not None else ""
        parts = [f"frame {self.frames_seen}{of}", _calls(self.windows)]
        if self.stage != "reconstructing":
            parts.insert(0, self.stage)
        if self.eta_s is not None:
            parts.append(f"about {format_seconds(self.eta_s)} left")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (a job's ``progress_detail``, a ``/stream`` reply's ``progress``), with the message."""
        out = asdict(self)
        out["input_hw"] = list(self.input_hw) if self.input_hw is not None else None
        out["elapsed_s"] = round(self.elapsed_s, 3)
        out["fraction"] = round(self.fraction, 4) if self.fraction is not None else None
        out["eta_s"] = round(self.eta_s, 1) if self.eta_s is not None else None
        out["message"] = self.message()
        return out


def _calls(windows: int) -> str:
    return f"{windows} model call{'s' if windows != 1 else ''}"


def format_seconds(seconds: float) -> str:
    """12 s, 3 min 5 s, 1 h 2 min."""
    s = max(0, int(math.ceil(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Turns the events of one run into :class:`Progress` for ``callback`` (an exception it raises
    cancels the run: a job's cancel button). Made by the run's owner; :func:`~edgescene.runtime.reconstruct.run`
    reports frames, keyframes, windows and its stages into it; whoever writes the outputs reports
    ``writing`` and ``done``. ``clock``: seconds (``time.perf_counter``)."""

    def __init__(
        self,
        callback: ProgressCallback | None,
        expected: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if expected is not None and expected < 0:
            raise ValueError(f"expected frames must be >= 0 or None, got {expected}")
        self._callback = callback
        self._clock = clock
        self._start: float | None = None
        self._kept_at: list[int] = []  # per keyframe sent to the model: frames seen when it was kept
        self.current = Progress("opening", frames_expected=expected)

    # -- events ----------------------------------------------------------------------------------
    def opening(self) -> None:
        self._emit(self.current)

    def started(self, model: str, input_hw: tuple[int, int]) -> None:
        """The first keyframe is prepared: the model and the size frames are fed at are known; they
        go out with that frame's event, before the first window runs (a window is >= 2 keyframes)."""
        self.current = replace(self.current, model=model, input_hw=(int(input_hw[0]), int(input_hw[1])))

    @property
    def kept(self) -> int:
        """Keyframes sent to the model so far."""
        return len(self._kept_at)

    def keyframe(self, seen: int) -> None:
        """The frame ``seen`` (counted from 1) goes to the model: said before its window can run."""
        self._kept_at.append(seen)

    def frame(self, seen: int) -> None:
        """Input frame ``seen`` (counted from 1) is through selection, and through the model's window
        when it completed one (:meth:`window` first)."""
        self._emit(replace(self.current, stage="reconstructing", frames_seen=seen))

    def window(self, keyframes: int, windows: int) -> None:
        """A window joined the map: ``keyframes`` in the map, ``windows`` model calls done."""
        done = self._kept_at[keyframes - 1] if 0 < keyframes <= len(self._kept_at) else self.current.frames_done
        self.current = replace(self.current, keyframes=keyframes, windows=windows, frames_done=done)

    def stage(self, stage: Stage) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
        current = self.current
        if stage in ("closing loops", "metric scale", "writing", "done"):  # every frame is through the model by now
            current = replace(current, frames_done=current.frames_seen)
        self._emit(replace(current, stage=stage))

    # -- arithmetic ------------------------------------------------------------------------------
    def _emit(self, progress: Progress) -> None:
        if self._start is None and progress.stage != "opening":
            self._start = self._clock()
        elapsed = self._clock() - self._start if self._start is not None else 0.0
        fraction = self._fraction(progress)
        eta = None
        if fraction is not None and 0 < fraction < 1 and progress.windows > 0 and progress.stage != "opening":
            eta = elapsed * (1 - fraction) / fraction
        self.current = replace(progress, elapsed_s=elapsed, fraction=fraction, eta_s=eta)
        if self._callback is not None:
            self._callback(self.current)

    @staticmethod
    def _fraction(p: Progress) -> float | None:
        if p.stage == "done":
            return 1.0
        if p.stage == "writing":
            return WRITE_SHARE
        if p.stage in ("closing loops", "metric scale"):
            return MODEL_SHARE
        if p.frames_expected is None:
            return None
        return 0.0 if p.stage == "opening" else _share(p)


def _share(p: Progress) -> float:
    expected = max(p.frames_expected or 0, p.frames_seen, 1)  # a header that said too few frames
    return MODEL_SHARE * min(p.frames_done / expected, 1.0)


class ProgressBar:
    """A terminal bar over :class:`Progress` (tqdm, on ``file``, stderr by default): the percentage of
    the run (100 % only once the outputs are written), or the frames counted where the input's
    length is unknown, and the message. ``on_start(progress)`` is called once with the first
    progress that names the model (the CLI prints its model line there, above the bar)."""

    REFRESH_S = 0.2  # the bar is redrawn at most this often while frames flow, on a terminal
    LOG_REFRESH_S = 10.0  # and into a file or a pipe (a log keeps every redraw)

    def __init__(
        self,
        file: IO[str] | None = None,
        on_start: Callable[[Progress], None] | None = None,
        disable: bool = False,
    ) -> None:
        self._file = file if file is not None else sys.stderr
        self._on_start = on_start
        self._disable = disable
        self._bar: Any = None
        self._announced = False
        self._shown = 0.0  # when the bar was last drawn (time.monotonic)
        isatty = getattr(self._file, "isatty", None)
        self._refresh_s = self.REFRESH_S if callable(isatty) and isatty() else self.LOG_REFRESH_S
        self._done = False

    def __call__(self, progress: Progress) -> None:
        if progress.model is not None and not self._announced:
            self._announced = True
            if self._on_start is not None:
                if self._bar is not None:  # the line goes above the bar
                    self._bar.clear()
                self._on_start(progress)
        bar = self._open(progress)
        if bar.total is not None and progress.fraction is not None:
            bar.n = min(int(progress.fraction * 100), 100)  # floor: 100 only at 1.0
        elif bar.total is None:
            bar.n = progress.frames_seen
        bar.set_description_str(progress.message(), refresh=False)
        if progress.stage == "done":  # closing draws the last state once
            self._done = True
            self.close()
            return
        now = time.monotonic()
        if progress.stage != "reconstructing" or now - self._shown >= self._refresh_s:  # every frame: too often
            self._shown = now
            bar.refresh()

    def _open(self, progress: Progress) -> Any:
        if self._bar is None:
            from tqdm import tqdm

            known = progress.fraction is not None
            self._bar = tqdm(
                total=100 if known else None,
                bar_format="reconstruct {percentage:3.0f}%|{bar}| {desc}"
                if known
                else "reconstruct {n_fmt} frames [{elapsed}] {desc}",
                desc=progress.message(),
                file=self._file,
                disable=self._disable,
                dynamic_ncols=True,
                leave=True,
            )
        return self._bar

    def close(self) -> None:
        """Done: the bar stays, at 100 %. Stopped (an error, Ctrl-C): the bar is wiped, so the error
        is the one line left."""
        if self._bar is not None:
            self._bar.leave = self._done
            self._bar.close()
            self._bar = None


__all__ = [
    "MODEL_SHARE",
    "STAGES",
    "WRITE_SHARE",
    "Progress",
    "ProgressBar",
    "ProgressCallback",
    "ProgressTracker",
    "format_seconds",
]
