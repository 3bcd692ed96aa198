"""The VGGT training loop, top to bottom (upstream ``training/trainer.py``, simplified, nanoGPT-style).

data -> ground-truth normalisation -> model under autocast -> multitask loss -> AdamW step with a
warm-up + cosine learning rate and per-module gradient clipping; logs every ``log_every`` steps,
validates and checkpoints every ``save_every`` steps and at the end.

Model: the preset, or ``init`` loaded strictly with :func:`edgescene.models.load_vggt` (its heads as
in the file), always **without the track head**: upstream never released the track loss, so the
head would get no gradient (and DDP would need ``find_unused_parameters``). A head whose loss weight
is 0 is frozen for the same reason. The checkpoint's ``model`` entry is the VGGT state_dict in the
official key layout, so ``load_vggt(out_dir/last.pt)`` and ``edgescene export --model`` read it.

Self-supervised (``config.self_supervised``): the data are windows of frames without ground truth
(:mod:`edgescene.train.vggt.unlabeled`; raw videos and image folders are preprocessed into
``out_dir/data`` first, with ``metadata_json``'s known intrinsics where given) and the loss is
:func:`edgescene.train.vggt.self_supervised.self_supervised_loss`.
Its safeguards: before the first step and at every validation the held-out windows of the user's
own footage are scored with the same loss (``val_loss``; and depth AbsRel / rotation error where
they carry ground truth), the best checkpoint is kept as ``best.pt``, ``patience`` validations
without improvement stop the run, and ``report.json`` / ``report.md`` (before / after table) and
``loss_curves.png`` are written beside the checkpoints.

``anchor_weight > 0`` (either kind of run) adds L2-SP to the loss: ``anchor_weight * sum((w - w_start)^2)``
over the trained parameters, ``w_start`` being the weights the run started from (saved in the
checkpoints' ``train_state["anchor"]``, so a resumed run keeps pulling towards the same start).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from edgescene.models.vggt import VGGT, VGGT_PRESETS
from edgescene.models.vggt.pose_encoding import pose_encoding_to_extri_intri, rotation_angle_deg
from edgescene.models.weights.common import CheckpointError, StateDictMismatchError
from edgescene.models.weights.vggt import load_vggt
from edgescene.train.common import (
    MetricsLogger,
    autocast_dtype,
    cleanup_distributed,
    cosine_schedule,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    setup_distributed,
)
from edgescene.train.vggt.config import VGGTTrainConfig
from edgescene.train.vggt.data import (
    SequenceDataset,
    StepBatchSampler,
    split_sequences,
    usable_sequences,
    validation_keys,
)
from edgescene.train.vggt.losses import LossConfig, vggt_loss
from edgescene.train.vggt.normalize import normalize_batch
from edgescene.train.vggt.self_supervised import SelfSupervisedConfig, self_supervised_loss

HEADS = {"camera_head": "camera_weight", "depth_head": "depth_weight", "point_head": "point_weight"}


def resume_path(config: VGGTTrainConfig) -> Path | None:
    if config.resume is None:
        return None
    return Path(config.out_dir) / "last.pt" if config.resume == "last" else Path(config.resume)


def build_model(config: VGGTTrainConfig, log=print) -> VGGT:
    """The model to train: weights from ``resume`` or ``init`` (strict), else random; no track head."""
    source = resume_path(config) or config.init
    if resume_path(config) is not None and config.init is not None:
        log(f"resuming: weights come from {resume_path(config)}, --init {config.init} is not used")
    if source is not None:
        model = _load_or_grow(source, config.preset, log).train()
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.data = tensor.data.clone()  # the loader may leave tensors memory-mapped from the file
        log(f"weights: {source}")
    else:
        model = VGGT(replace(VGGT_PRESETS[config.preset], enable_track=False)).train()
        log("weights: random initialisation")
    if model.track_head is not None:
        model.track_head = None  # no released track loss: train (and save) without it
    if config.self_supervised and (model.camera_head is None or model.depth_head is None):
        raise ValueError("self-supervised training needs the camera and depth heads; the --init file lacks one")
    for head, weight_name in HEADS.items():
        if not config.self_supervised and getattr(config, weight_name) > 0 and getattr(model, head) is None:
            raise ValueError(
                f"{weight_name} is {getattr(config, weight_name)} but the model has no {head} "
                f"(the --init file lacks it): set {weight_name} to 0"
            )
    frozen = {"none": [], "aggregator": [model.aggregator], "patch_embed": [model.aggregator.patch_embed]}[
        config.freeze
    ]
    frozen += [
        getattr(model, h) for h in HEADS if h not in trained_heads(config, model) and getattr(model, h) is not None
    ]
    for module in frozen:
        module.requires_grad_(False)
    model.aggregator.gradient_checkpointing = config.gradient_checkpointing
    return model


def _load_or_grow(source: str | Path, preset: str, log=print) -> VGGT:
    """``source`` loaded strictly as ``preset``; or, for a preset with the camera head's motion cues
    (``vggt_small_motion``) and weights of the same model without them (``vggt_small``), every tensor
    taken over and the cues new (they add nothing until trained: their last layer starts at zero)."""
    try:
        return load_vggt(source, preset=preset)
    except StateDictMismatchError as mismatch:
        if not VGGT_PRESETS[preset].camera_motion:
            raise
        try:
            base = load_vggt(source)
        except CheckpointError:
            raise mismatch from None
        target = replace(VGGT_PRESETS[preset], **{k: getattr(base.config, k) for k in HEAD_FLAGS})
        if replace(base.config, camera_motion=True) != target:
            raise mismatch from None
    model = VGGT(target)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not key.startswith("camera_head.motion.") for key in missing):
        raise StateDictMismatchError(f"growing {source} into {preset}", list(missing), list(unexpected), [])
    log(f"weights: grown from {source}: {len(missing)} tensors of the camera head's motion cues start fresh")
    return model


HEAD_FLAGS = ("enable_camera", "enable_depth", "enable_point", "enable_track")


def weights_preset(path: str | Path) -> str:
    """The VGGT preset that the weights in ``path`` (released weights or a training checkpoint) match
    key for key: what ``--init`` with them trains unless a preset is named."""
    from edgescene.models.weights.inspect import inspect_checkpoint

    report = inspect_checkpoint(path)
    if report["family"] != "vggt":
        raise ValueError(f"{path}: {report['family']} weights, not VGGT")
    return str(report["preset"])


def trained_heads(config: VGGTTrainConfig, model: VGGT) -> set[str]:
    """Heads that get a gradient: supervised, those with a loss weight > 0; self-supervised, the depth
    head, the camera head when the warp goes through it or a term compares it, and the point head
    when a consistency term uses it."""
    if not config.self_supervised:
        return {h for h, w in HEADS.items() if getattr(config, w) > 0}
    heads = {"depth_head"}
    if (
        config.warp_poses == "camera_head"
        or config.camera_consistency_weight > 0
        or config.intrinsics_weight > 0
        or (config.warp_poses == "matches" and config.match_pose_weight > 0)
    ):
        heads.add("camera_head")
    if model.point_head is not None and (config.point_consistency_weight > 0 or config.camera_consistency_weight > 0):
        heads.add("point_head")
    return heads


def known_cameras(batch: dict) -> tuple:
    """What a self-supervised batch carries of its cameras: (known_intrinsics, has_intrinsics,
    known_extrinsics, has_extrinsics), None where it has none."""
    keys = ("known_intrinsics", "has_intrinsics", "known_extrinsics", "has_extrinsics")
    return tuple(batch.get(key) for key in keys)


def carries_intrinsics(dataset) -> bool:
    """Whether any frame of a self-supervised dataset comes with its camera's known intrinsics."""
    from edgescene.train.vggt.unlabeled import known_intrinsics

    return any(known_intrinsics(entry) is not None for entries in dataset.sequences for entry in entries)


def self_supervised_config(config: VGGTTrainConfig) -> SelfSupervisedConfig:
    return SelfSupervisedConfig(
        photometric_weight=config.photometric_weight,
        smoothness_weight=config.smoothness_weight,
        point_weight=config.point_consistency_weight,
        camera_weight=config.camera_consistency_weight,
        automask=config.automask,
        warp_poses=config.warp_poses,
        match_pose_weight=config.match_pose_weight,
        intrinsics_weight=config.intrinsics_weight,
        conf_alpha=config.confidence_alpha,
    )


def build_optimizer(model: VGGT, config: VGGTTrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on >= 2-D weights only (nanoGPT's split; biases, norms and tokens are not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def starting_weights(model: VGGT) -> dict[str, torch.Tensor]:
    """A copy of every trained parameter as it is now: the anchor of ``anchor_weight``."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def anchor_pairs(model: VGGT, start: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, its starting value) for every anchored parameter: looked up once, used every step."""
    named = dict(model.named_parameters())
    return [(named[name], w0) for name, w0 in start.items()]


def anchor_penalty(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """L2-SP (Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
    Networks", ICML 2018): sum over the trained parameters of ``(w - w_start)^2``, a scalar in the
    parameters' dtype; its gradient pulls each weight back towards where the fine-tune started."""
    return torch.stack([((w - w0) ** 2).sum() for w, w0 in pairs]).sum()


def resumed_anchor(saved: dict | None, model: VGGT, device: torch.device) -> dict[str, torch.Tensor]:
    """The anchor a checkpoint carries, checked against the parameters this run trains."""
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    if saved is None:
        raise ValueError(
            "anchor_weight > 0, but the checkpoint to resume was saved without the starting weights it anchors to "
            "(a run with anchor_weight 0): resume with --anchor-weight 0, or start again from --init"
        )
    if set(saved) != trained:
        raise ValueError(
            f"the checkpoint's anchor covers {len(saved)} tensors but this run trains {len(trained)}: resume with "
            "the --freeze (and loss weights) the run started with"
        )
    return {name: tensor.to(device) for name, tensor in saved.items()}


def clip_per_module(model: VGGT, max_norm: float) -> float:
    """Clip the aggregator and each head separately (upstream's gradient-clip groups); returns the total norm."""
    total = 0.0
    for name in ("aggregator", *HEADS):
        module = getattr(model, name)
        params = [p for p in module.parameters() if p.grad is not None] if module is not None else []
        if params:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
            total += float(norm) ** 2
    return math.sqrt(total)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def validate(
    model: VGGT, dataset: SequenceDataset, keys: list, device: torch.device, amp: torch.dtype | None
) -> dict[str, float]:
    """Depth AbsRel after per-frame median scaling and mean rotation error (degrees) on held-out samples."""
    model.eval()
    abs_rel, rot = [], []
    for key in keys:
        sample = {k: v[None] for k, v in to_device(dataset[key], device).items()}
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            pred = model(sample["images"])
        a, r = _gt_scores(pred, sample)
        abs_rel += a
        rot += r
    model.train()
    out = {}
    if abs_rel:
        out["val_abs_rel"] = sum(abs_rel) / len(abs_rel)
    if rot:
        out["val_rot_deg"] = sum(rot) / len(rot)
    return out


def _gt_scores(pred: dict, sample: dict) -> tuple[list[float], list[float]]:
    """Depth AbsRel per frame (after per-frame median scaling) and the mean rotation error (degrees)."""
    gt = normalize_batch(sample["extrinsics"], sample["intrinsics"], sample["depth"], sample["valid"])
    abs_rel, rot = [], []
    if "depth" in pred:
        for d, g, m in zip(pred["depth"][0, ..., 0].float(), gt["depth"][0], gt["valid"][0], strict=True):
            if m.sum() > 0:
                scaled = d[m] * (g[m].median() / d[m].median().clamp(min=1e-8))
                abs_rel.append(float(((scaled - g[m]).abs() / g[m]).mean()))
    if "pose_enc" in pred:
        extrinsics, _ = pose_encoding_to_extri_intri(pred["pose_enc"][0].float(), tuple(sample["depth"].shape[-2:]))
        rot.append(float(rotation_angle_deg(extrinsics[:, :, :3], gt["extrinsics"][0, :, :, :3]).mean()))
    return abs_rel, rot


@torch.no_grad()
def validate_self_supervised(
    model: VGGT, dataset, keys: list, device: torch.device, amp: torch.dtype | None, cfg: SelfSupervisedConfig
) -> tuple[dict[str, float], list[float]]:
    """Held-out windows: ``val_loss``, the photometric score (``photo_score`` of
    :func:`~edgescene.train.vggt.self_supervised.photometric_loss`: per pixel the smaller of the
    warped and the unwarped error, averaged over every pixel; the training loss itself is not used,
    as its confidence term and the auto-mask could lower it without better geometry), ``val_total``
    (the training loss), and depth AbsRel and rotation error (``val_abs_rel``, ``val_rot_deg``) on
    the windows that carry ground truth; and the photometric score of each window, in ``keys``'
    order (what :class:`BestTracker` compares checkpoints on, window by window)."""
    model.eval()
    losses, totals, abs_rel, rot = [], [], [], []
    for key in keys:
        sample = {k: v[None] for k, v in to_device(dataset[key], device).items()}
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            pred = model(sample["images"])
        terms = self_supervised_loss(sample["images"], pred, cfg, *known_cameras(sample))
        totals.append(float(terms["total"]))
        losses.append(float(terms.get("photo_score", terms.get("photo_error", terms["total"]))))
        if bool(sample["has_gt"]):
            a, r = _gt_scores(pred, sample)
            abs_rel += a
            rot += r
    model.train()
    out = {"val_loss": sum(losses) / len(losses), "val_total": sum(totals) / len(totals)} if losses else {}
    if abs_rel:
        out["val_abs_rel"] = sum(abs_rel) / len(abs_rel)
    if rot:
        out["val_rot_deg"] = sum(rot) / len(rot)
    return out, losses


def self_supervised_warnings(config: VGGTTrainConfig, train_set, val_set, held_out_windows: int) -> list[str]:
    """What a self-supervised run warns of (logged, and repeated in its report): too little footage
    for a gain (:func:`~edgescene.train.vggt.unlabeled.footage_warning`), too few held-out windows
    to pick ``best.pt`` by."""
    from edgescene.train.vggt.unlabeled import HELD_OUT_END, footage_warning

    held_out = val_set.names if val_set is not None and config.val_dataset is None else []
    warnings = [footage_warning(len(train_set) + sum(not n.endswith(HELD_OUT_END) for n in held_out))]
    if held_out_windows == 0:
        warnings.append(
            "warning: no held-out windows (--val-fraction 0 and no --val-data, or one sequence too short to hold "
            "its end out): nothing checks the training, no best.pt is kept and last.pt is the result whatever it "
            "became. Hold footage out (--val-fraction 0.2, more or longer sequences, or --val-data)"
        )
    elif held_out_windows < BestTracker.MIN_WINDOWS:
        warnings.append(
            f"warning: {held_out_windows} held-out window(s): too few to tell a better checkpoint from noise (at "
            f"least {BestTracker.MIN_WINDOWS}); best.pt then follows the held-out score alone. Give more or longer "
            "sequences, or a larger --val-fraction"
        )
    return [w for w in warnings if w]


def build_datasets(config: VGGTTrainConfig, log=print):
    """Training and validation datasets (supervised: :class:`SequenceDataset`; self-supervised:
    :class:`~edgescene.train.vggt.unlabeled.UnlabeledSequenceDataset`)."""
    if config.self_supervised:
        return _unlabeled_datasets(config, log)
    size = (config.image_height, config.image_width)
    sequences = usable_sequences(config.dataset_dir, config.frames_per_sequence[0])
    train_names, val_names = split_sequences(list(sequences), config.val_fraction, config.seed)
    train_set = SequenceDataset(
        config.dataset_dir,
        {n: sequences[n] for n in train_names},
        *size,
        augment=config.augment,
        max_stride=config.max_stride,
    )
    val_set = None
    if config.val_dataset is not None:
        val_set = SequenceDataset(config.val_dataset, usable_sequences(config.val_dataset, 1), *size, augment=False)
    elif val_names:
        val_set = SequenceDataset(config.dataset_dir, {n: sequences[n] for n in val_names}, *size, augment=False)
    log(
        f"data: {len(train_set)} training sequences ({sum(train_set.lengths)} frames), "
        f"{len(val_set) if val_set else 0} validation sequences"
    )
    return train_set, val_set


def _unlabeled_datasets(config: VGGTTrainConfig, log=print):
    from edgescene.train.vggt.unlabeled import (
        UnlabeledSequenceDataset,
        hold_out_end,
        prepare_unlabeled,
        unlabeled_sequences,
    )

    size = (config.image_height, config.image_width)
    root = prepare_unlabeled(config.dataset_dir, config.out_dir, size=max(size), log=log,
                             metadata_json=config.metadata_json)  # fmt: skip
    sequences = unlabeled_sequences(root, config.frames_per_sequence[0], source=config.dataset_dir)
    train_names, val_names = split_sequences(list(sequences), config.val_fraction, config.seed)
    if len(sequences) == 1 and config.val_fraction > 0 and config.val_dataset is None:
        sequences, train_names, val_names = hold_out_end(sequences, config.val_fraction, config.frames_per_sequence)
        if val_names:
            log(
                f"data: one sequence: its last {len(sequences[val_names[0]])} frames are held out to pick best.pt "
                "(frames next to the training ones: a weaker check than a sequence of its own)"
            )
    train_set = UnlabeledSequenceDataset(
        root, {n: sequences[n] for n in train_names}, *size, augment=config.augment, max_stride=config.max_stride
    )
    val_set = None
    if config.val_dataset is not None:
        val_root = prepare_unlabeled(config.val_dataset, Path(config.out_dir) / "val", size=max(size), log=log,
                                     metadata_json=config.metadata_json)  # fmt: skip
        val_seqs = unlabeled_sequences(val_root, config.frames_per_sequence[0], source=config.val_dataset)
        val_set = UnlabeledSequenceDataset(val_root, val_seqs, *size, augment=False, with_gt=True)
    elif val_names:
        val_set = UnlabeledSequenceDataset(
            root, {n: sequences[n] for n in val_names}, *size, augment=False, with_gt=True
        )
    log(
        f"data (self-supervised): {len(train_set)} training sequences ({sum(train_set.lengths)} frames), "
        f"{len(val_set) if val_set else 0} held-out sequences"
    )
    return train_set, val_set


def train(
    config: VGGTTrainConfig, stop_at_step: int | None = None, should_stop: Callable[[], bool] | None = None
) -> dict[str, float]:
    """Run (or continue) a training job; returns the last logged metrics.

    ``stop_at_step``: save and return once this step is done (time-sliced jobs; tests of resuming).
    ``should_stop``: polled after every step; when it returns True the run saves ``last.pt`` and
    returns (a stop button: the run continues later with ``resume="last"``).
    """
    info = setup_distributed(config.device)
    log = print if info.is_main else (lambda *a, **k: None)
    try:
        seed_everything(config.seed, info.rank)
        train_set, val_set = build_datasets(config, log)
        if config.self_supervised and config.intrinsics_weight > 0 and not carries_intrinsics(train_set):
            # nothing to supervise the field of view with: the camera head is not trained for it
            config = replace(config, intrinsics_weight=0.0)
        model = build_model(config, log).to(info.device)
        optimizer = build_optimizer(model, config)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(
            f"model: {config.preset}, {sum(p.numel() for p in model.parameters()):,} parameters, {n_train:,} trained; "
            f"device {info.device}, {info.world_size} process(es)"
        )
        anchor = starting_weights(model) if config.anchor_weight > 0 else None
        start = 0
        resumed_best: dict | None = None
        amp = autocast_dtype(info.device)
        scaler = torch.amp.GradScaler(info.device.type, enabled=amp == torch.float16)
        if resume_path(config) is not None:
            ckpt = load_checkpoint(resume_path(config), kind="vggt")
            resumed_best = ckpt["train_state"].get("best")
            try:
                optimizer.load_state_dict(ckpt["train_state"]["optimizer"])
            except ValueError as error:  # a different set of trained tensors than the run saved
                raise ValueError(
                    f"cannot resume {resume_path(config)}: it trained other parameters than this run would ({error}); "
                    "resume with the --freeze and loss weights the run started with (its config is printed at its "
                    "start and saved in the checkpoint)"
                ) from error
            torch.set_rng_state(ckpt["train_state"]["torch_rng"])
            if "scaler" in ckpt["train_state"]:
                scaler.load_state_dict(ckpt["train_state"]["scaler"])
            start = int(ckpt["step"])
            if anchor is not None:  # the weights the run started from, not the ones it resumes with
                anchor = resumed_anchor(ckpt["train_state"].get("anchor"), model, info.device)
            log(f"resumed from {resume_path(config)} at step {start}")
        anchored = anchor_pairs(model, anchor) if anchor is not None else []
        if start >= config.steps:
            log(f"nothing to do: step {start} >= steps {config.steps}")
            return {}
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=device_ids) if info.distributed else model
        sampler = StepBatchSampler(
            train_set.lengths,
            config.batch_size,
            config.frames_per_sequence,
            config.seed,
            start,
            config.steps,
            info.rank,
        )
        loader = DataLoader(
            train_set, batch_sampler=sampler, num_workers=config.num_workers, pin_memory=info.device.type == "cuda"
        )
        val_keys = []
        if val_set is not None and config.self_supervised:
            from edgescene.train.vggt.unlabeled import validation_windows

            val_keys = validation_windows(val_set, config.frames_per_sequence[1])
        elif val_set is not None:
            val_keys = validation_keys(val_set, config.frames_per_sequence[1])
        loss_cfg = LossConfig(
            camera_weight=config.camera_weight,
            depth_weight=config.depth_weight,
            point_weight=config.point_weight,
            point_gradient=config.point_gradient,
            match_weight=config.match_weight,
            patch_size=VGGT_PRESETS[config.preset].patch_size,
        )
        logger = MetricsLogger(config.out_dir, enabled=info.is_main)
        ss_cfg = self_supervised_config(config) if config.self_supervised else None

        def run_validation() -> tuple[dict[str, float], list[float] | None]:
            """The held-out scores, and the self-supervised score of each held-out window (else None)."""
            if ss_cfg is not None:
                return validate_self_supervised(model, val_set, val_keys, info.device, amp, ss_cfg)
            return validate(model, val_set, val_keys, info.device, amp), None

        def write_checkpoint(path: Path, step: int, values: dict) -> Path:
            train_state = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
            train_state["best"] = tracker.state()
            if anchor is not None:
                train_state["anchor"] = {name: tensor.cpu() for name, tensor in anchor.items()}
            if scaler.is_enabled():
                train_state["scaler"] = scaler.state_dict()
            return save_checkpoint(
                path,
                kind="vggt",
                preset=config.preset,
                config=config.to_dict(),
                step=step,
                model={k: v.detach().cpu() for k, v in model.state_dict().items()},
                train_state=train_state,
                metrics=values,
            )

        warnings = []  # logged now, and repeated in a self-supervised run's report
        if config.self_supervised:
            warnings = self_supervised_warnings(config, train_set, val_set, len(val_keys))
        for warning in warnings:
            log(warning)
        tracker = BestTracker.from_state(resumed_best, "val_loss" if config.self_supervised else "val_abs_rel")
        if info.is_main and val_keys and start == 0 and config.self_supervised:
            before, windows = run_validation()  # the model as it came: the "before" of the report
            logger.log(0, before)
            tracker.before = before
            log("before training: " + ", ".join(f"{k} {v:.4f}" for k, v in before.items()))
            if tracker.update(0, before, windows):  # the starting weights are the best until training beats them
                write_checkpoint(Path(config.out_dir) / "best.pt", 0, before)
        sums: dict[str, float] = {}
        count, metrics, t0 = 0, {}, time.time()
        warned_unmatched = False
        run_start, done = time.time(), start
        bar = tqdm(total=config.steps, initial=start, desc="train vggt", unit="step", disable=not info.is_main)
        for step, batch in zip(range(start, config.steps), loader, strict=True):
            lr = cosine_schedule(config.lr, config.min_lr, step, config.steps, config.warmup_steps, config.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = to_device(batch, info.device)
            with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
                predictions = ddp(batch["images"])
            if ss_cfg is not None:
                losses = self_supervised_loss(batch["images"], predictions, ss_cfg, *known_cameras(batch))
            else:
                gt = normalize_batch(batch["extrinsics"], batch["intrinsics"], batch["depth"], batch["valid"])
                losses = vggt_loss(predictions, gt, loss_cfg)
            if anchor is not None:
                losses["anchor"] = anchor_penalty(anchored)
                losses["total"] = losses["total"] + config.anchor_weight * losses["anchor"]
            if not torch.isfinite(losses["total"]):
                raise TrainingDiverged(
                    f"step {step + 1}: the loss is {float(losses['total'].detach())} "
                    f"({', '.join(f'{k} {float(v.detach()):.4g}' for k, v in losses.items())}): training diverged; "
                    f"lower --lr (now {config.lr:g}) or resume from a checkpoint before it (OUT/best.pt, OUT/last.pt)"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.unscale_(optimizer)
            grad_norm = clip_per_module(model, config.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            done = step + 1
            for key, value in {**{k: float(v.detach()) for k, v in losses.items()}, "grad_norm": grad_norm}.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            bar.update(1)
            if done % config.log_every == 0 or done == config.steps:
                metrics = average_across_ranks({k: v / count for k, v in sums.items()}, info.device, info.distributed)
                metrics.update(lr=lr, frames=float(batch["images"].shape[1]), steps_per_s=count / (time.time() - t0))
                logger.log(done, metrics)
                if metrics.get("matched_pairs", 1.0) == 0 and not warned_unmatched:
                    warned_unmatched = True
                    log(
                        f"step {done}: warning: no pair of frames got a measured pose since the last log (frames too "
                        "small or too flat for optical flow, or a camera that did not move): the photometric loss has "
                        "nothing to learn from; train at a larger --height/--width, on windows with more motion "
                        "(--frames), or with --warp-poses camera_head"
                    )
                bar.set_postfix(loss=f"{metrics['total']:.4f}", lr=f"{lr:.2e}")
                sums, count, t0 = {}, 0, time.time()
            stopping = should_stop is not None and should_stop()
            if stopping:
                log(f"step {done}: stop requested; saving and returning")
            last = done == config.steps or done == stop_at_step or stopping
            improved = early_stop = False
            if info.is_main and (done % config.save_every == 0 or last):
                if val_keys:
                    val, windows = run_validation()
                    metrics.update(val)
                    logger.log(done, val)
                    improved = tracker.update(done, val, windows)
                    log(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()) + tracker.verdict)
                    early_stop = config.patience is not None and tracker.bad >= config.patience
                    if early_stop:
                        tracker.stopped_early = True
                        log(
                            f"step {done}: {tracker.metric} has not gone lower for {tracker.bad} validations "
                            f"(best {tracker.best:.4f} at step {tracker.best_step}): stopping early"
                        )
                path = write_checkpoint(Path(config.out_dir) / "last.pt", done, metrics)
                tqdm.write(f"step {done}: saved {path}")
                if improved:
                    shutil.copyfile(path, Path(config.out_dir) / "best.pt")
            if agree(early_stop, info):
                stopping = True
            if done == stop_at_step or stopping:
                break
        bar.close()
        logger.close()
        if info.is_main and config.self_supervised:
            from edgescene.train.vggt.report import write_report

            write_report(config, tracker, done, time.time() - run_start, warnings)
        return metrics
    finally:
        cleanup_distributed()


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class BestTracker:
    """The best validation so far (lower is better), how many validations since, and the "before".

    A validation replaces the best when it is lower by more than ``MIN_DELTA`` (relative). When each
    held-out window's score comes with it (self-supervised runs), the gain must also stand out of
    the windows' own spread: over the windows both were scored on, the mean of the paired
    differences (best minus new) must exceed ``Z`` standard errors of that mean. On these scores a
    1-2 % lower mean was measured to say nothing of the depth (checkpoints that beat the start by
    0.7-2.1 % ranged from 21 % better to 4.5 % worse in AbsRel: ``docs/self_supervised.md``), so a
    lower mean that a few windows carry does not displace the starting weights.

    Patience (``bad``) counts the validations since the score last went lower, new best or not: a
    score that keeps falling by amounts too small to trust one at a time is still progress, and
    the run goes on until the fall adds up to one that stands out or stops.
    """

    MIN_DELTA = 1e-4  # an improvement must beat the best by this share (noise is not progress)
    Z = 2.0  # standard errors of the mean paired difference a new best must beat the old one by
    MIN_WINDOWS = 3  # fewer paired windows cannot estimate a spread: the MIN_DELTA rule alone

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.best = float("inf")
        self.best_step: int | None = None
        self.best_values: dict[str, float] = {}
        self.best_windows: list[float] = []
        self.lowest = float("inf")  # the lowest score seen, best or not: what patience waits on
        self.bad = 0  # validations since the score last went lower (by MIN_DELTA), for patience
        self.before: dict[str, float] = {}
        self.stopped_early = False
        self.verdict = ""  # the last update's decision, for the log: "" or "; <why>"

    @classmethod
    def from_state(cls, state: dict | None, metric: str) -> BestTracker:
        tracker = cls(metric)
        if state:
            tracker.best, tracker.best_step = float(state["best"]), state["best_step"]
            tracker.best_values, tracker.bad = dict(state["best_values"]), int(state["bad"])
            tracker.before = dict(state.get("before", {}))
            tracker.best_windows = list(state.get("best_windows", []))
            tracker.lowest = float(state.get("lowest", tracker.best))
        return tracker

    def update(self, step: int, values: dict[str, float], windows: list[float] | None = None) -> bool:
        """Record a validation (``windows``: the score of each held-out window, in a fixed order, or
        None); True when it replaces the best (see the class)."""
        value = values.get(self.metric)
        self.verdict = ""
        if value is None:
            return False
        lower = self.best_step is None or value < self.lowest - self.MIN_DELTA * abs(self.lowest)
        self.lowest, self.bad = (min(value, self.lowest), 0) if lower else (self.lowest, self.bad + 1)
        better = self.best_step is None or value < self.best - self.MIN_DELTA * abs(self.best)
        if better and self.best_step is not None and windows and len(windows) == len(self.best_windows):
            better = self._stands_out(windows)
        if better:
            self.best, self.best_step, self.best_values = value, step, dict(values)
            self.best_windows = list(windows or [])
        return better

    def _stands_out(self, windows: list[float]) -> bool:
        """Whether ``windows`` beat the best's, window by window, by more than ``Z`` standard errors."""
        gains = [b - w for b, w in zip(self.best_windows, windows, strict=True)]
        n = len(gains)
        if n < self.MIN_WINDOWS:
            return True
        mean = sum(gains) / n
        spread = math.sqrt(sum((g - mean) ** 2 for g in gains) / (n - 1) / n)
        if mean > self.Z * spread:
            return True
        share = 100 * mean / abs(self.best) if self.best else 0.0
        self.verdict = (
            f"; {share:.1f} % below the best (step {self.best_step}) on average, but within {self.Z:g} standard "
            f"errors of the {n} held-out windows' differences (+-{100 * self.Z * spread / abs(self.best):.1f} %): "
            "not a new best"
        )
        return False

    def state(self) -> dict:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "best_values": self.best_values,
            "best_windows": self.best_windows,
            "lowest": self.lowest,
            "bad": self.bad,
            "before": self.before,
        }


def agree(flag: bool, info) -> bool:
    """``flag`` of the main process, on every process (early stopping decided where validation ran)."""
    if not info.distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def average_across_ranks(values: dict[str, float], device: torch.device, distributed: bool) -> dict[str, float]:
    if not distributed:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, tensor.tolist(), strict=True)}
