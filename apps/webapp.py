"""The Gradio web app (``edgescene app``): model setup, training, export and 3D reconstruction.

Tabs:
  Model setup         upload a DINOv3 / VGGT checkpoint (checked key for key, preset detected),
                      download VGGT from the Hugging Face Hub by repo id and file name
  Train DINOv3 / VGGT start and stop a trainer in a background process; live loss plot and progress
  Export              a checkpoint or training run to an artifact (format, size); parity figures shown
  3D reconstruction   a single image, several images or a video -> 3D viewer, GLB / PLY downloads and
                      per-keyframe depth images; display controls re-render cached predictions

Every job goes through a public function: ``edgescene.apps.reconstruction`` (runtime),
``edgescene.train.launch.start_training``, ``edgescene.export.pipeline.export_model``, and
``edgescene.apps.workspace`` (checkpoint checks). PyTorch is imported only by the tabs that need it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gradio as gr

from edgescene.apps.models_catalog import list_models
from edgescene.apps.reconstruction import DEFAULT_MAX_FRAMES, MODES, reconstruct, rerender
from edgescene.apps.workspace import CHECKPOINT_SUFFIXES, Workspace
from edgescene.assets import sample_dir
from edgescene.runtime.frames import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from edgescene.runtime.scene import ViewOptions

VGGT_TRAIN_PRESETS = ("vggt_tiny", "vggt_small", "vggt_small_motion", "vggt_base", "vggt_1b")
DINO_TRAIN_PRESETS = ("dinov3_tiny", "dinov3_vits16", "dinov3_vitb16", "dinov3_vitl16")
SUPERVISED_LR = 1e-4  # the VGGT tab's learning rate; self-supervised runs start from the trainer's default
SELF_SUPERVISED_LR = 2e-5  # train.vggt.config.SELF_SUPERVISED_DEFAULTS["lr"] (tests/apps check they agree)
CALIBRATION_NAME = "calibration.json"  # self-supervised training: the footage's intrinsics (preprocess's metadata JSON)
SAMPLE_VIDEO = sample_dir() / "sample.mp4"  # "Try the sample video"
EXPORT_FORMATS = ("onnx", "onnx-fp16", "onnx-int8", "onnx-int8-static", "tensorrt", "triton")


def _presets(family: str, fallback: tuple[str, ...]) -> list[str]:
    try:
        from edgescene.train.checkpoints import training_presets

        return training_presets(family)
    except ImportError:
        return list(fallback)


def _file_path(value) -> str | None:
    """A Gradio file value (a path, a file object, or nothing) as a path."""
    if not value:
        return None
    return value if isinstance(value, str) else value.name


def scale_spec(scale_from: str | None, track: str | None) -> str | None:
    """The runtime's ``scale_from`` for the app's two fields: ``gps`` / ``poses`` take the uploaded track."""
    spec = (scale_from or "").strip()
    if not spec:
        if track:
            raise ValueError("a track was given without 'metres from': write gps (GPX, CSV) or poses (TUM)")
        return None
    if spec in ("gps", "poses"):
        if not track:
            raise ValueError(f"metres from {spec} needs its track file")
        return f"{spec}:{track}"
    if track:
        raise ValueError(f"metres from {spec} takes no track; remove the file or write gps / poses")
    return spec


def _error(exc: Exception | str) -> str:
    return f"**Error:** {exc}"


def _in_app_words(message: str, kind: str) -> str:
    """A trainer's message with the app's way out: footage without ground truth trains self-supervised."""
    if kind == "vggt" and "no sequences with depth+cameras" in message:
        message += " For footage without depth or cameras, tick 'self-supervised' and start again."
    return message


class WebApp:
    """The app's state (workspace, training runs) and its event handlers, each a plain method."""

    def __init__(self, workspace: Workspace, models_dir: Path | None = None) -> None:
        self.workspace = workspace
        self.extra_models = models_dir
        self.runs: dict[str, object] = {}  # kind -> TrainingRun

    # -- models ------------------------------------------------------------------------------
    def reconstruction_models(self) -> dict[str, str]:
        """name -> model: the bundled model, the workspace's exports, --models-dir's, then the VGGT
        checkpoints of Model setup (uploaded, or downloaded from the Hub: facebook/VGGT-1B), which run
        on the PyTorch backend (CUDA when present) at upstream's input size."""
        models = {}
        for folder in (self.workspace.models_dir, self.extra_models):
            for entry in list_models(folder):
                if entry.info.get("usable") and entry.info.get("family") == "vggt":
                    models.setdefault(entry.name, str(entry.path))
        for report in self.workspace.checkpoints():
            if report.get("family") == "vggt":
                models.setdefault(f"checkpoint: {report['name']}", str(report["file"]))
        return models

    def checkpoint_rows(self) -> list[list]:
        return [
            [r.get("name"), r.get("family"), r.get("preset"), r.get("parameters"), r.get("size_mb")]
            for r in self.workspace.checkpoints()
        ]

    def checkpoint_choices(self) -> list[str]:
        return [r["name"] for r in self.workspace.checkpoints()]

    def export_sources(self) -> list[str]:
        runs = [f"run: {p.name}" for p in self.workspace.runs()]
        return [f"checkpoint: {n}" for n in self.checkpoint_choices()] + runs

    def inventory(self) -> str:
        """What the workspace holds now, for Model setup: the models reconstruction can use (the
        bundled one among them) and the checkpoints training and export start from."""
        models = list(self.reconstruction_models())
        checkpoints = self.checkpoint_choices()
        lines = [f"**Reconstruction models ({len(models)}):** {', '.join(models)} (3D reconstruction tab)"]
        lines.append(
            f"**Checkpoints ({len(checkpoints)}):** {', '.join(checkpoints)}"
            if checkpoints
            else "**Checkpoints:** none yet. None is needed to reconstruct (the bundled model is ready); "
            "add one here to train from it or export it."
        )
        return "\n\n".join(lines)

    def add_checkpoint(self, file) -> tuple[str, list[list]]:
        if not file:
            return _error("choose a checkpoint file first"), self.checkpoint_rows()
        try:
            report = self.workspace.add_checkpoint(file)
        except (ValueError, RuntimeError) as exc:
            return _error(exc), self.checkpoint_rows()
        return self._report_md(report), self.checkpoint_rows()

    def download(self, repo_id: str, filename: str) -> tuple[str, list[list]]:
        try:
            report = self.workspace.download_vggt(repo_id, filename)
        except Exception as exc:  # noqa: BLE001 - offline, gated, missing file: all shown to the user
            reason = getattr(exc, "reason", None)  # the Hub's problem, without command-line advice
            if reason is not None:
                exc = RuntimeError(
                    f"{reason}. Download the checkpoint once where there is network "
                    f"(huggingface.co/{repo_id.strip()}), then add it here with **Check and add**."
                )
            return _error(exc), self.checkpoint_rows()
        return self._report_md(report), self.checkpoint_rows()

    @staticmethod
    def _report_md(report: dict) -> str:
        lines = [f"**Added {report['name']}**: {report['family']} preset `{report['preset']}`"]
        lines += [f"- {k}: {v}" for k, v in report.items() if k not in ("name", "family", "preset", "file")]
        return "\n".join(lines)

    # -- training ----------------------------------------------------------------------------
    def start_training(
        self,
        kind: str,
        dataset_dir: str,
        run_name: str,
        preset: str,
        steps: float,
        batch_size: float,
        lr: float,
        device: str,
        init: str | None,
        height: float = 0,
        width: float = 0,
        self_supervised: bool = False,
    ) -> str:
        from edgescene.train.launch import start_training

        current = self.runs.get(kind)
        if current is not None and current.running:
            return _error(f"a {kind} run is already going ({current.out_dir.name}); stop it first")
        try:
            out_dir = self.workspace.run_dir(run_name)
            if (out_dir / "last.pt").exists():
                raise ValueError(
                    f"run {out_dir.name!r} already has a checkpoint; choose another name (nothing is overwritten)"
                )
            self_supervised = bool(self_supervised) and kind == "vggt"
            if self_supervised and not (dataset_dir and Path(dataset_dir).is_dir()):
                raise ValueError(
                    f"dataset folder {dataset_dir!r} does not exist; self-supervised training takes a folder of "
                    "videos and image sequences (one folder of frames per sequence) or a manifest folder"
                )
            if not self_supervised and (not dataset_dir or not (Path(dataset_dir) / "manifest.json").is_file()):
                raise ValueError(
                    f"dataset folder {dataset_dir!r} has no manifest.json; make one with "
                    "`edgescene preprocess` or `edgescene synth`"
                )
            init_path = str(self.workspace.checkpoints_dir / init) if init else None
            common = dict(
                dataset_dir=dataset_dir,
                out_dir=str(out_dir),
                preset=preset,
                init=init_path,
                steps=int(steps),
                batch_size=int(batch_size),
                lr=float(lr),
                device=device,
                log_every=1,
                num_workers=0,
            )
            if kind == "vggt":
                from edgescene.train.vggt.config import VGGTTrainConfig

                ss = {}
                calibration = Path(dataset_dir) / CALIBRATION_NAME
                if self_supervised and calibration.is_file() and not (Path(dataset_dir) / "manifest.json").is_file():
                    ss["metadata_json"] = str(calibration)  # the camera's intrinsics, as preprocess reads them
                # self-supervised: the trainer's measured defaults (depth head only, patience, held-out share)
                make = VGGTTrainConfig.self_supervised_run if self_supervised else VGGTTrainConfig
                config = make(
                    **common,
                    image_height=int(height),
                    image_width=int(width),
                    save_every=max(1, int(steps) // 4),
                    **ss,
                )
                if not self_supervised:  # a dataset it cannot train on is said now, not by a failed run
                    from edgescene.train.vggt.data import usable_sequences

                    usable_sequences(dataset_dir, config.frames_per_sequence[0])
            else:
                from edgescene.train.checkpoints import patch_size
                from edgescene.train.dinov3.config import DinoTrainConfig

                n, patch, crop = int(steps), patch_size(preset), int(height)
                local = max(2 * patch, round(crop * 96 / 224 / patch) * patch)  # upstream's 224:96 ratio
                config = DinoTrainConfig(
                    **common,
                    global_crop_size=crop,
                    local_crop_size=local,
                    warmup_steps=max(1, n // 10),
                    save_every=max(1, n // 4),
                    freeze_last_layer_steps=min(1250, n // 10),
                    teacher_temp_warmup_steps=min(3000, n // 3),
                )
        except ImportError as exc:
            return _error(f"training needs PyTorch: pip install 'edgescene[torch]' ({exc})")
        except (ValueError, TypeError) as exc:
            return _error(_in_app_words(str(exc), kind))
        self.runs[kind] = start_training(config)
        return f"started {kind} run **{out_dir.name}** ({config.steps} steps on {device})"

    def stop_training(self, kind: str) -> str:
        run = self.runs.get(kind)
        if run is None or not run.running:
            return "no run is going"
        run.stop()
        return f"stopping {run.out_dir.name}: it saves last.pt after the current step"

    def training_active(self, kind: str) -> bool:
        run = self.runs.get(kind)
        return run is not None and run.running

    def training_status(self, kind: str):
        """(status markdown, loss plot data) of the kind's current run."""
        import pandas as pd

        run = self.runs.get(kind)
        if run is None:
            return "no run started in this session", pd.DataFrame({"step": [], "loss": []})
        p = run.progress()
        text = (
            f"**{p['state']}**: step {p['step']} / {p['steps']}, loss {p['loss']:.4f}"
            if p["loss"] is not None
            else f"**{p['state']}**: step {p['step']} / {p['steps']}"
        )
        text += f", {p['elapsed_s']:.0f} s; folder `{p['out_dir']}`"
        if p["checkpoint"]:
            text += f"; checkpoint `{p['checkpoint']}`"
        if p["state"] == "failed":  # one line with the fix, never a traceback (the run folder keeps it)
            message = run.error_message()
            if message is None:
                message = "the training process ended without a report (out of memory, or killed)"
            message = _in_app_words(message, kind)
            text += (
                f"\n\n**Error:** {message}\n\n(the full report is `train_error.txt` / `train.log` in the run folder)"
            )
        report = Path(p["out_dir"]) / "report.md"
        if p["state"] != "running" and report.is_file():  # self-supervised runs: the before / after table
            text += "\n\n" + report.read_text()
        records = [r for r in run.metrics() if "total" in r]
        frame = pd.DataFrame({"step": [r["step"] for r in records], "loss": [r["total"] for r in records]})
        return text, frame

    # -- export ------------------------------------------------------------------------------
    def export(
        self,
        source: str,
        fmt: str,
        name: str,
        height: float,
        width: float,
        max_frames: float,
        precision: str = "default",
        progress=gr.Progress(),
    ) -> tuple[str, list[list]]:
        """Export a checkpoint or a run's last.pt by running ``edgescene export`` in a child process
        (the app never imports the exporter: a crash or an out-of-memory there cannot take it down)."""
        if not source:
            return _error("choose a checkpoint or a training run to export"), []
        kind, _, item = source.partition(": ")
        model = (
            str(self.workspace.checkpoints_dir / item)
            if kind == "checkpoint"
            else str(self.workspace.runs_dir / item / "last.pt")
        )
        try:
            out = self.workspace.models_dir / self.workspace.run_dir(name or f"{item}_{fmt}").name
            if out.exists():
                raise ValueError(f"a model called {out.name!r} exists already; choose another name")
            frames = int(max_frames)
            if frames < 1:
                raise ValueError(f"max frames must be >= 1, got {frames}")
            command = [
                sys.executable,
                "-m",
                "edgescene",
                "export",
                "--model",
                model,
                "--format",
                fmt,
                "--out",
                str(out),
                "--frames-range",
                f"1:{min(2, frames)}:{frames}",
            ]
            if int(height):
                command += ["--height", str(int(height))]
            if int(width):
                command += ["--width", str(int(width))]
            if precision not in (None, "", "default"):
                command += ["--precision", str(precision)]
        except (ValueError, TypeError) as exc:
            return _error(exc), []
        progress(0.1, desc="exporting")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        folder = out if out.is_dir() else out.with_name(out.name + ".rejected")
        if not (folder / "artifact.json").is_file():
            detail = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
            return _error(" ".join(detail[-3:])), []
        artifact = json.loads((folder / "artifact.json").read_text())
        rows = []
        for case in artifact.get("parity", {}).get("cases", []):
            for output in case["outputs"]:
                rows.append(
                    [
                        case["frames"],
                        output["name"],
                        f"{output['p99_abs']:.3g}",
                        f"{output['max_abs']:.3g}",
                        f"{output['cosine']:.6f}",
                    ]
                )
        accepted = bool(artifact.get("accepted")) and done.returncode == 0
        verdict = "accepted" if accepted else "REJECTED by the parity gate"
        sizes = ", ".join(
            f"{p.relative_to(folder)} {p.stat().st_size / 2**20:.1f} MB"
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        )
        return (
            f"**{out.name}**: {verdict} in {artifact.get('elapsed_s', 0):.0f} s ({sizes}); "
            "it is now offered in 3D reconstruction"
            if accepted
            else f"**{out.name}**: {verdict}"
        ), rows

    # -- reconstruction ----------------------------------------------------------------------
    def run_reconstruction(
        self,
        files,
        mode,
        model_name,
        every_s,
        max_frames,
        conf,
        show_cameras,
        filter_bg,
        branch,
        loop_closure=False,
        calibration=None,
        scale_from="",
        track=None,
        progress=gr.Progress(),
    ):
        models = self.reconstruction_models()
        try:
            calibration_path = _file_path(calibration)
            scale = scale_spec(scale_from, _file_path(track))
            if model_name not in models:
                raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(models)}")
            paths = [f if isinstance(f, str) else f.name for f in (files or [])]
            options = ViewOptions(
                conf_percentile=float(conf),
                branch=branch,
                show_cameras=bool(show_cameras),
                filter_background=bool(filter_bg),
            )
            result = reconstruct(
                paths,
                mode,
                models[model_name],
                self.workspace.reconstructions_dir,
                every_s=float(every_s) if every_s else None,
                max_frames=int(max_frames) if max_frames else None,
                options=options,
                # the run's one progress model; an input of unknown length counts its frames
                on_progress=lambda p: progress(
                    p.fraction if p.fraction is not None else (p.frames_seen, None), desc=p.message(), unit="frames"
                ),
                loop_closure=bool(loop_closure),
                intrinsics=calibration_path,
                scale_from=scale,
            )
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            return _error(exc), None, None, [], None
        return self._view(result, model_name)

    def rerender(self, folder, conf, show_cameras, filter_bg, branch):
        if not folder:
            return "change the display after a reconstruction has run", None, None, [], folder
        try:
            options = ViewOptions(
                conf_percentile=float(conf),
                branch=branch,
                show_cameras=bool(show_cameras),
                filter_background=bool(filter_bg),
            )
            result = rerender(folder, options)
        except Exception as exc:  # noqa: BLE001
            return _error(exc), None, None, [], folder
        return self._view(result)

    @staticmethod
    def _view(result, model_name: str | None = None):
        how = "model run and render" if result.model_run else "re-rendered from cached predictions (model not run)"
        status = f"model **{model_name}**: " if model_name else ""
        status += (
            f"{result.keyframes} keyframes, {result.points:,} points; {how} in {result.seconds:.2f} s; "
            f"branches available: {', '.join(result.branches)}"
        )
        for note in result.notes:
            status += f"\n\n**Note:** {note}"
        gallery = (
            [(img, f"keyframe {i}") for i, img in enumerate(result.depth_images)] if result.model_run else gr.skip()
        )  # depth images do not depend on the display options: leave them as they are
        return status, str(result.glb), [str(result.glb), str(result.ply)], gallery, str(result.folder)


def build_app(workspace: str | Path = "workspace", models_dir: str | Path | None = None) -> gr.Blocks:
    """The Gradio Blocks app over ``workspace`` (created if missing)."""
    app = WebApp(Workspace(Path(workspace)), Path(models_dir) if models_dir else None)
    inits: list[gr.Dropdown] = []  # each training tab's "start from"
    started_events: list = []  # each training tab's Start (a run appears among Export's sources)
    train_tabs: list = []
    with gr.Blocks(title="edgescene") as demo:
        gr.Markdown("# edgescene\nPhotos and video to 3D scenes with VGGT; DINOv3 and VGGT training and export.")
        with gr.Tabs(selected="reconstruct"):  # opens where the bundled model works at once
            with gr.Tab("Model setup", id="setup") as setup_tab:
                gr.Markdown(
                    "Upload a DINOv3 `.pth` or a VGGT checkpoint: it is loaded safely, checked key for key "
                    "against the presets and kept in the workspace with its detected preset."
                )
                inventory = gr.Markdown(app.inventory(), elem_id="setup-inventory")
                with gr.Row():
                    upload = gr.File(
                        label="checkpoint",
                        file_types=list(CHECKPOINT_SUFFIXES),
                        type="filepath",
                        elem_id="setup-upload",
                    )
                    with gr.Column():
                        add_btn = gr.Button("Check and add", elem_id="setup-add")
                        repo = gr.Textbox(label="VGGT Hub repo id", value="facebook/VGGT-1B")
                        hub_file = gr.Textbox(label="file name (empty: model.safetensors or model.pt)")
                        dl_btn = gr.Button("Download from the Hub")
                setup_status = gr.Markdown(elem_id="setup-status")
                table = gr.Dataframe(
                    headers=["name", "family", "preset", "parameters", "size (MB)"],
                    value=app.checkpoint_rows(),
                    interactive=False,
                    label="checkpoints",
                )
                added = add_btn.click(app.add_checkpoint, [upload], [setup_status, table])
                downloaded = dl_btn.click(app.download, [repo, hub_file], [setup_status, table])

            for kind, label, presets, default in (
                ("dinov3", "Train DINOv3", _presets("dinov3", DINO_TRAIN_PRESETS), "dinov3_tiny"),
                ("vggt", "Train VGGT", _presets("vggt", VGGT_TRAIN_PRESETS), "vggt_tiny"),
            ):
                with gr.Tab(label, id=f"train-{kind}") as train_tab:
                    with gr.Row():
                        dataset = gr.Textbox(
                            label="dataset folder (with manifest.json)", elem_id=f"train-{kind}-dataset"
                        )
                        run_name = gr.Textbox(label="run name", value=f"{kind}_run")
                        preset = gr.Dropdown(
                            presets, value=default if default in presets else presets[0], label="preset"
                        )
                    with gr.Row():
                        steps = gr.Number(label="steps", value=100, precision=0, minimum=1)
                        batch = gr.Number(label="batch size", value=2, precision=0, minimum=1)
                        lr = gr.Number(
                            label="learning rate",
                            value=SUPERVISED_LR if kind == "vggt" else 5e-4,
                            elem_id=f"train-{kind}-lr",
                        )
                        device = gr.Dropdown(["auto", "cpu", "cuda"], value="auto", label="device")
                        init = gr.Dropdown(
                            app.checkpoint_choices(),
                            value=None,
                            label="start from (optional)",
                            allow_custom_value=False,
                            elem_id=f"train-{kind}-init",
                        )
                        inits.append(init)
                    with gr.Row(equal_height=True):  # the input size (and VGGT's training mode) on a row of their own
                        if kind == "vggt":
                            height = gr.Number(label="height", value=126, precision=0)
                            width = gr.Number(label="width", value=168, precision=0)
                            self_sup = gr.Checkbox(
                                value=False,
                                label="self-supervised",
                                info="footage without depth or cameras: videos or frame folders; a "
                                f"{CALIBRATION_NAME} in the folder (preprocess's metadata format) gives the camera's "
                                "intrinsics",
                                elem_id="vggt-self-supervised",
                                scale=2,
                            )
                            self_sup.change(  # each kind of run starts from its own learning rate
                                lambda on: gr.Number(value=SELF_SUPERVISED_LR if on else SUPERVISED_LR), self_sup, lr
                            )
                        else:
                            height = gr.Number(
                                label="crop size (global; local crops scale with it)", value=112, precision=0
                            )
                            width = gr.Number(value=0, visible=False)
                            self_sup = gr.Checkbox(value=False, visible=False)
                    with gr.Row():
                        start = gr.Button("Start", variant="primary", elem_id=f"train-{kind}-start")
                        stop = gr.Button("Stop")
                    status = gr.Markdown(elem_id=f"train-{kind}-status")
                    plot = gr.LinePlot(x="step", y="loss", label="training loss")
                    timer = gr.Timer(2.0, active=False)  # polls only while a run is going

                    def on_start(*args, k=kind):
                        message = app.start_training(k, *args)
                        return message, gr.Timer(active=app.training_active(k))

                    def on_tick(k=kind):
                        text, frame = app.training_status(k)
                        return text, frame, gr.Timer(active=app.training_active(k))

                    train_tabs.append(train_tab)
                    started = start.click(
                        on_start,
                        [dataset, run_name, preset, steps, batch, lr, device, init, height, width, self_sup],
                        [status, timer],
                    )
                    started_events.append(started)
                    stop.click(lambda k=kind: app.stop_training(k), None, [status])
                    timer.tick(on_tick, None, [status, plot, timer])

            with gr.Tab("Export", id="export") as export_tab:
                with gr.Row():
                    source = gr.Dropdown(
                        app.export_sources(), label="checkpoint or training run", elem_id="export-source"
                    )
                    refresh = gr.Button("Refresh list")
                    fmt = gr.Dropdown(list(EXPORT_FORMATS), value="onnx", label="format")
                    name = gr.Textbox(label="model name (empty: from the source)", elem_id="export-name")
                with gr.Row():
                    ex_h = gr.Number(label="height (0: model default)", value=0, precision=0)
                    ex_w = gr.Number(label="width (0: model default)", value=0, precision=0)
                    ex_frames = gr.Number(
                        label="max frames per call", value=8, precision=0, minimum=1, elem_id="export-frames"
                    )
                    ex_precision = gr.Dropdown(
                        ["default", "fp32", "fp16", "int8"],
                        value="default",
                        label="precision (tensorrt / triton; the onnx formats imply theirs)",
                    )
                ex_btn = gr.Button("Export", variant="primary", elem_id="export-run")
                ex_status = gr.Markdown(elem_id="export-status")
                parity = gr.Dataframe(
                    headers=["frames", "output", "p99 |diff|", "max |diff|", "cosine"],
                    interactive=False,
                    label="parity against PyTorch",
                )
                refresh.click(lambda: gr.update(choices=app.export_sources()), None, [source])
                exported = ex_btn.click(
                    app.export, [source, fmt, name, ex_h, ex_w, ex_frames, ex_precision], [ex_status, parity]
                )

            with gr.Tab("3D reconstruction", id="reconstruct") as reconstruct_tab:
                models = app.reconstruction_models()
                with gr.Row():
                    with gr.Column(scale=1):
                        mode = gr.Radio(list(MODES), value="video", label="input")
                        files = gr.File(
                            label="images or a video",
                            file_count="multiple",
                            type="filepath",
                            elem_id="recon-files",
                            file_types=list(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS),
                        )
                        model = gr.Dropdown(
                            list(models), value=next(iter(models)), label="model", elem_id="recon-model"
                        )
                        every_s = gr.Slider(0, 5, value=0, step=0.1, label="video: one frame every N seconds (0: all)")
                        max_frames = gr.Number(
                            label=f"max frames (0: {DEFAULT_MAX_FRAMES})",
                            value=DEFAULT_MAX_FRAMES,
                            precision=0,
                            minimum=0,
                            elem_id="recon-max-frames",
                        )
                        loop_closure = gr.Checkbox(
                            value=False,
                            label="loop closure: correct drift where the video revisits a place (GTSAM)",
                            elem_id="recon-loop-closure",
                        )
                        with gr.Accordion("calibration and metres", open=False):
                            calibration = gr.File(
                                label="calibration.json: known intrinsics (fx, fy, cx, cy, or K; per image)",
                                file_types=[".json"],
                                type="filepath",
                                elem_id="recon-calibration",
                            )
                            scale_from = gr.Textbox(
                                label="metres from: exif | baseline:METRES | gps (with a track) | poses (with a track)",
                                value="",
                                elem_id="recon-scale-from",
                            )
                            track = gr.File(
                                label="track: GPX or CSV (gps), TUM (poses)",
                                file_types=[".gpx", ".csv", ".tum", ".txt"],
                                type="filepath",
                                elem_id="recon-track",
                            )
                        run_btn = gr.Button("Reconstruct", variant="primary", elem_id="recon-run")
                        sample_btn = gr.Button("Try the sample video", elem_id="recon-sample")
                        gr.Markdown("Display (re-renders without running the model):")
                        conf = gr.Slider(0, 100, value=50, step=1, label="confidence percentile (drop below)")
                        show_cams = gr.Checkbox(value=True, label="show cameras", elem_id="recon-cameras")
                        filter_bg = gr.Checkbox(value=False, label="filter background (near-black / white pixels)")
                        branch = gr.Radio(
                            ["depth", "points"], value="depth", label="branch: depth + cameras, or the point-map head"
                        )
                    with gr.Column(scale=2):
                        rec_status = gr.Markdown(elem_id="recon-status")
                        viewer = gr.Model3D(
                            label="3D scene", clear_color=(0.95, 0.95, 0.95, 1.0), elem_id="recon-viewer"
                        )
                        downloads = gr.File(label="downloads (GLB, PLY)", file_count="multiple", interactive=False)
                        depth = gr.Gallery(label="depth per keyframe", columns=6, height=240, elem_id="recon-depth")
                cache = gr.State(None)
                outputs = [rec_status, viewer, downloads, depth, cache]
                inputs = [files, mode, model, every_s, max_frames, conf, show_cams, filter_bg, branch, loop_closure]
                inputs += [calibration, scale_from, track]
                run_btn.click(app.run_reconstruction, inputs, outputs)
                # the bundled sample with the chosen model, one click
                sample_btn.click(lambda: ([str(SAMPLE_VIDEO)], "video"), None, [files, mode]).then(
                    app.run_reconstruction, inputs, outputs
                )
                for control in (conf, show_cams, filter_bg, branch):
                    event = control.release if control is conf else control.change
                    event(app.rerender, [cache, conf, show_cams, filter_bg, branch], outputs)

        # One live catalogue: every list re-reads the workspace when the page loads, when a tab is
        # opened and after whatever adds to it (a checkpoint, an export, a training run), so the
        # setup -> train -> export -> reconstruct flow never needs a restart.
        def refresh(chosen_model, chosen_source, *chosen_inits):
            models = list(app.reconstruction_models())
            sources = app.export_sources()
            checkpoints = app.checkpoint_choices()
            return (
                app.inventory(),
                app.checkpoint_rows(),
                gr.update(choices=models, value=chosen_model if chosen_model in models else models[0]),
                gr.update(choices=sources, value=chosen_source if chosen_source in sources else None),
                *(gr.update(choices=checkpoints, value=c if c in checkpoints else None) for c in chosen_inits),
            )

        listed = [inventory, table, model, source, *inits]
        chosen = [model, source, *inits]
        demo.load(refresh, chosen, listed)
        for event in (added, downloaded, exported, *started_events):
            event.then(refresh, chosen, listed)
        for tab in (setup_tab, export_tab, reconstruct_tab, *train_tabs):
            tab.select(refresh, chosen, listed)
    return demo


__all__ = ["WebApp", "build_app"]
