"""CLI subcommands. Each is a :class:`Command`: a name, a help line, an argument builder and a runner."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from edgescene.commands import apps as _apps
from edgescene.commands import bench as _bench
from edgescene.commands import colmap as _colmap
from edgescene.commands import data as _data
from edgescene.commands import evaluate as _evaluate
from edgescene.commands import export as _export
from edgescene.commands import models as _models
from edgescene.commands import reconstruct as _reconstruct
from edgescene.commands import synth as _synth
from edgescene.commands import train as _train
from edgescene.commands import view as _view


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = [
    Command(
        "reconstruct",
        "reconstruct cameras, depth and a point cloud from images or a video",
        _reconstruct.add_reconstruct_arguments,
        _reconstruct.run_reconstruct,
    ),
    Command(
        "colmap",
        "write the COLMAP sparse model (pycolmap) of a reconstruction folder, optionally bundle-adjusted",
        _colmap.add_colmap_arguments,
        _colmap.run_colmap,
    ),
    Command(
        "view",
        "show a reconstruction folder in the browser: points, camera frustums, trajectory (viser)",
        _view.add_view_arguments,
        _view.run_view,
    ),
    Command(
        "models",
        "list every model preset with its parameter count and where its weights come from",
        _models.add_models_arguments,
        _models.run_models,
    ),
    Command(
        "download",
        "fetch a VGGT checkpoint from the Hugging Face Hub, check it and copy it to a folder",
        _models.add_download_arguments,
        _models.run_download,
    ),
    Command(
        "inspect",
        "identify a checkpoint file (family, preset, form), verify its hash and keys",
        _models.add_inspect_arguments,
        _models.run_inspect,
    ),
    Command(
        "preprocess",
        "resize images, IR, satellite GeoTIFFs and video frames into PNGs plus a manifest.json",
        _data.add_preprocess_arguments,
        _data.run_preprocess,
    ),
    Command(
        "export",
        "export a model to ONNX / TensorRT / Triton, accepted only through the parity gate",
        _export.add_export_arguments,
        _export.run_export,
    ),
    Command(
        "train",
        "train DINOv3 (self-supervised) or VGGT (depth, cameras, points) on a dataset folder",
        _train.add_train_arguments,
        _train.run_train,
    ),
    Command(
        "synth",
        "render synthetic multi-view scenes with exact depth and cameras (training / evaluation data)",
        _synth.add_synth_arguments,
        _synth.run_synth,
    ),
    Command(
        "eval",
        "depth and pose accuracy of a VGGT model on a dataset with ground truth, optionally beside baselines",
        _evaluate.add_eval_arguments,
        _evaluate.run_eval,
    ),
    Command(
        "bench",
        "benchmark export formats beside PyTorch: latency, throughput, memory, accuracy; report.md + plots",
        _bench.add_bench_arguments,
        _bench.run_bench,
    ),
    Command(
        "serve",
        "HTTP service: reconstruction jobs (upload, poll, download) and a live websocket stream",
        _apps.add_serve_arguments,
        _apps.run_serve,
    ),
    Command(
        "app",
        "Gradio web app: model setup, training, export and 3D reconstruction in the browser",
        _apps.add_app_arguments,
        _apps.run_app,
    ),
]
