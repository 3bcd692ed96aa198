"""The VGGT training loop, top to bottom (upstream ``training/trainer.py``, simplified, nanoGPT-style).

data -> ground-truth normalisation -> model under autocast -> multitask loss -> AdamW step with a
warm-up + cosine learning rate and per-module gradient clipping; logs every ``log_every`` steps,
validates and checkpoints every ``save_every`` steps and at the end.

Model: the preset, or ``init`` loaded strictly with :func:`edgescene.models.load_vggt` (its heads as
in the file), always **without the track head**: upstream never released the track loss, so the
head would get no gradient (and DDP would need ``find_unused_parameters``). A head whose loss weight
is 0 is frozen for the same reason. The checkpoint's ``model`` entry is the VGGT state_dict in the
official key layout, so ``load_vggt(out_dir/last.pt)`` and ``edgescene export --model`` read it.
"""

from __future__ import annotations

import math
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
        model = load_vggt(source, preset=config.preset).train()
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.data = tensor.data.clone()  # the loader may leave tensors memory-mapped from the file
        log(f"weights: {source}")
    else:
        model = VGGT(replace(VGGT_PRESETS[config.preset], enable_track=False)).train()
        log("weights: random initialisation")
    if model.track_head is not None:
        model.track_head = None  # no released track loss: train (and save) without it
    for head, weight_name in HEADS.items():
        if getattr(config, weight_name) > 0 and getattr(model, head) is None:
            raise ValueError(
                f"{weight_name} is {getattr(config, weight_name)} but the model has no {head} "
                f"(the --init file lacks it): set {weight_name} to 0"
            )
    frozen = {"none": [], "aggregator": [model.aggregator], "patch_embed": [model.aggregator.patch_embed]}[
        config.freeze
    ]
    frozen += [getattr(model, h) for h, w in HEADS.items() if getattr(config, w) == 0 and getattr(model, h) is not None]
    for module in frozen:
        module.requires_grad_(False)
    model.aggregator.gradient_checkpointing = config.gradient_checkpointing
    return model


def build_optimizer(model: VGGT, config: VGGTTrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on >= 2-D weights only (nanoGPT's split; biases, norms and tokens are not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


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
        gt = normalize_batch(sample["extrinsics"], sample["intrinsics"], sample["depth"], sample["valid"])
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            pred = model(sample["images"])
        if "depth" in pred:
            for d, g, m in zip(pred["depth"][0, ..., 0].float(), gt["depth"][0], gt["valid"][0], strict=True):
                if m.sum() > 0:
                    scaled = d[m] * (g[m].median() / d[m].median().clamp(min=1e-8))
                    abs_rel.append(float(((scaled - g[m]).abs() / g[m]).mean()))
        if "pose_enc" in pred:
            extrinsics, _ = pose_encoding_to_extri_intri(pred["pose_enc"][0].float(), tuple(sample["depth"].shape[-2:]))
            rot.append(float(rotation_angle_deg(extrinsics[:, :, :3], gt["extrinsics"][0, :, :, :3]).mean()))
    model.train()
    out = {}
    if abs_rel:
        out["val_abs_rel"] = sum(abs_rel) / len(abs_rel)
    if rot:
        out["val_rot_deg"] = sum(rot) / len(rot)
    return out


def build_datasets(config: VGGTTrainConfig, log=print) -> tuple[SequenceDataset, SequenceDataset | None]:
    size = (config.image_height, config.image_width)
    sequences = usable_sequences(config.dataset_dir, config.frames_per_sequence[0])
    train_names, val_names = split_sequences(list(sequences), config.val_fraction, config.seed)
    train_set = SequenceDataset(
        config.dataset_dir, {n: sequences[n] for n in train_names}, *size, augment=config.augment
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
        model = build_model(config, log).to(info.device)
        optimizer = build_optimizer(model, config)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(
            f"model: {config.preset}, {sum(p.numel() for p in model.parameters()):,} parameters, {n_train:,} trained; "
            f"device {info.device}, {info.world_size} process(es)"
        )
        start = 0
        amp = autocast_dtype(info.device)
        scaler = torch.amp.GradScaler(info.device.type, enabled=amp == torch.float16)
        if resume_path(config) is not None:
            ckpt = load_checkpoint(resume_path(config), kind="vggt")
            optimizer.load_state_dict(ckpt["train_state"]["optimizer"])
            torch.set_rng_state(ckpt["train_state"]["torch_rng"])
            if "scaler" in ckpt["train_state"]:
                scaler.load_state_dict(ckpt["train_state"]["scaler"])
            start = int(ckpt["step"])
            log(f"resumed from {resume_path(config)} at step {start}")
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
        val_keys = validation_keys(val_set, config.frames_per_sequence[1]) if val_set is not None else []
        loss_cfg = LossConfig(
            camera_weight=config.camera_weight,
            depth_weight=config.depth_weight,
            point_weight=config.point_weight,
            point_gradient=config.point_gradient,
        )
        logger = MetricsLogger(config.out_dir, enabled=info.is_main)
        sums: dict[str, float] = {}
        count, metrics, t0 = 0, {}, time.time()
        bar = tqdm(total=config.steps, initial=start, desc="train vggt", unit="step", disable=not info.is_main)
        for step, batch in zip(range(start, config.steps), loader, strict=True):
            lr = cosine_schedule(config.lr, config.min_lr, step, config.steps, config.warmup_steps, config.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = to_device(batch, info.device)
            gt = normalize_batch(batch["extrinsics"], batch["intrinsics"], batch["depth"], batch["valid"])
            with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
                predictions = ddp(batch["images"])
            losses = vggt_loss(predictions, gt, loss_cfg)
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
                bar.set_postfix(loss=f"{metrics['total']:.4f}", lr=f"{lr:.2e}")
                sums, count, t0 = {}, 0, time.time()
            stopping = should_stop is not None and should_stop()
            if stopping:
                log(f"step {done}: stop requested; saving and returning")
            last = done == config.steps or done == stop_at_step or stopping
            if info.is_main and (done % config.save_every == 0 or last):
                if val_keys:
                    val = validate(model, val_set, val_keys, info.device, amp)
                    metrics.update(val)
                    logger.log(done, val)
                    log(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
                train_state = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
                if scaler.is_enabled():
                    train_state["scaler"] = scaler.state_dict()
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                path = save_checkpoint(
                    Path(config.out_dir) / "last.pt",
                    kind="vggt",
                    preset=config.preset,
                    config=config.to_dict(),
                    step=done,
                    model=state,
                    train_state=train_state,
                    metrics=metrics,
                )
                tqdm.write(f"step {done}: saved {path}")
            if done == stop_at_step or stopping:
                break
        bar.close()
        logger.close()
        return metrics
    finally:
        cleanup_distributed()


def average_across_ranks(values: dict[str, float], device: torch.device, distributed: bool) -> dict[str, float]:
    if not distributed:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, tensor.tolist(), strict=True)}
