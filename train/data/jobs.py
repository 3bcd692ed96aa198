"""Running ``edgescene preprocess``'s per-source jobs: render one source and write its outputs,
turning any failure into an error result, either in this process or in a pool of worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgescene.core.manifest import Entry
from edgescene.train.data.convert import Job, convert_image, convert_video
from edgescene.train.data.outputs import write_outputs
from edgescene.train.data.readers import ReadError


@dataclass(frozen=True)
class Context:
    """What every job of one run shares (sent once to each worker process)."""

    output_dir: Path
    size: int
    max_video_frames: int
    tile_size: int
    overwrite: bool
    owned: frozenset[str]  # output paths listed in the previous manifest: ours to replace


@dataclass
class Result:
    rel: str
    entries: list[Entry]
    error: str | None = None
    written: int = 0


def process_source(job: Job, ctx: Context) -> Result:
    """Render and write one source; every failure becomes ``Result.error``."""
    try:
        if job.kind == "video":
            rendered = convert_video(job, ctx.size, ctx.max_video_frames)
        else:
            rendered = convert_image(job, ctx.size, ctx.tile_size)
        written = write_outputs(rendered, ctx.output_dir, ctx.overwrite, ctx.owned)
        return Result(job.rel, [entry for entry, _ in rendered], written=written)
    except ReadError as exc:
        return Result(job.rel, [], error=str(exc))
    except MemoryError:
        return Result(job.rel, [], error="out of memory while decoding (image too large for this machine)")
    except Exception as exc:  # noqa: BLE001 - a decoder's unexpected failure is recorded; the run goes on
        return Result(job.rel, [], error=f"unexpected {type(exc).__name__}: {exc}")


_WORKER_CTX: Context | None = None


def _init_worker(ctx: Context) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx
    import cv2

    cv2.setNumThreads(1)  # the pool already uses the cores


def _process_in_worker(job: Job) -> Result:
    assert _WORKER_CTX is not None, "worker started without _init_worker"
    return process_source(job, _WORKER_CTX)


def run_jobs(jobs: list[Job], ctx: Context, workers: int) -> Iterator[Result]:
    """Results of every job: in order with one worker, in completion order with a process pool."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield process_source(job, ctx)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(ctx,),
    )
    try:
        futures = {pool.submit(_process_in_worker, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # noqa: BLE001 - the worker died (decoder crash, OOM kill): recorded
                yield Result(futures[future].rel, [], error=f"worker process failed: {type(exc).__name__}: {exc}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
