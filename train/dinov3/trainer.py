"""DINOv3 self-supervised training / fine-tuning, readable top to bottom.

Follows ``dinov3/train/train.py`` and ``dinov3/train/ssl_meta_arch.py`` of facebookresearch/dinov3
(the ViT recipe without Gram anchoring, high-resolution adaptation or distillation): a student
(backbone + DINO head + iBOT head) learns to match an EMA teacher on multi-crop views; losses are
DINO on CLS tokens (Sinkhorn-Knopp targets), iBOT on masked patches, and KoLeo.

Run (see ``python -m edgescene.train.dinov3.cli --help`` for every option)::

    # one GPU (or CPU): fine-tune a released ViT-S/16 on a preprocessed folder
    python -m edgescene.train.dinov3.cli --dataset-dir data/processed --out-dir runs/dino_s \\
        --preset dinov3_vits16 --init dinov3_vits16_pretrain_lvd1689m-08c60483.pth --steps 20000
    # N GPUs on one node (DDP)
    torchrun --nproc_per_node=N -m edgescene.train.dinov3.cli --dataset-dir data/processed --out-dir runs/dino_s ...
    # continue an interrupted run exactly where last.pt left it
    python -m edgescene.train.dinov3.cli --dataset-dir data/processed --out-dir runs/dino_s --resume ...

The checkpoint ``out_dir/last.pt`` (``train/common.py`` format, kind ``dinov3``) holds the EMA
teacher's backbone under ``model`` in the official key layout, so ``edgescene.models.load_dinov3``,
export and the runtime read it directly.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from edgescene.models.dinov3 import DINOV3_PRESETS, build_dinov3
from edgescene.models.weights.dinov3 import load_dinov3
from edgescene.train.common import (
    MetricsLogger,
    autocast_dtype,
    cosine_schedule,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    setup_distributed,
)
from edgescene.train.dinov3.config import DinoTrainConfig
from edgescene.train.dinov3.data import ManifestImages, MultiCropAugmentation, build_loader
from edgescene.train.dinov3.heads import DINOHead
from edgescene.train.dinov3.losses import dino_loss, ibot_loss, koleo_loss, sample_masks, sinkhorn_knopp

N_GLOBAL = 2  # global crops per image, fixed upstream
TOKENS = ("cls_token", "storage_tokens", "mask_token")
LOSS_KEYS = ("total", "dino_local", "dino_global", "ibot", "koleo")


class SSLModel(nn.Module):
    """Backbone + DINO head + iBOT head: the student, and (an EMA copy) the teacher."""

    def __init__(self, config: DinoTrainConfig) -> None:
        super().__init__()
        self.backbone = build_dinov3(config.preset)
        dim, heads = (
            self.backbone.embed_dim,
            (config.head_prototypes, config.head_hidden_dim, config.head_bottleneck_dim),
        )
        self.dino_head = DINOHead(dim, heads[0], hidden_dim=heads[1], bottleneck_dim=heads[2])
        self.ibot_head = DINOHead(dim, heads[0], hidden_dim=heads[1], bottleneck_dim=heads[2])

    def forward(
        self,
        global_crops: torch.Tensor,
        masks: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        mask_inputs: bool = True,
    ) -> dict[str, torch.Tensor]:
        """global_crops (2B, 3, G, G) crop-major; masks (2B, h*w) bool; local_crops (nB, 3, L, L).

        ``mask_inputs`` replaces masked patches by the mask token (student); the teacher sees full
        crops and only reads its patch tokens at the masked positions.
        """
        g = self.backbone.forward_features(global_crops, masks=masks if mask_inputs else None)
        out = {
            "cls": g["x_norm_clstoken"],
            "dino_global": self.dino_head(g["x_norm_clstoken"]),
            "ibot": self.ibot_head(g["x_norm_patchtokens"][masks]),
        }
        if local_crops is not None:
            cls_local = self.backbone.forward_features(local_crops, local_crops=True)["x_norm_clstoken"]
            out["dino_local"] = self.dino_head(cls_local)
        return out


def build_models(config: DinoTrainConfig) -> tuple[SSLModel, SSLModel]:
    """Student and teacher, identical on every rank (seeded by config.seed alone). ``init`` loads a
    released backbone into both; the heads always start fresh (upstream does not release them)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        student = SSLModel(config)
    if config.init is not None:
        released = load_dinov3(config.init, preset=config.preset)  # strict, official keys
        student.backbone.load_state_dict(released.state_dict())
    teacher = copy.deepcopy(student).eval()
    teacher.requires_grad_(False)
    return student, teacher


def param_groups(model: SSLModel, config: DinoTrainConfig) -> list[dict]:
    """AdamW groups keyed by (lr multiplier, wd multiplier, is last layer), as upstream
    ``get_params_groups_with_decay_fixed``: layer-wise lr decay over blocks (tokens and patch_embed
    are layer 0, final norm and heads the top), patch-embed lr x patch_embed_lr_mult, no weight
    decay on biases, norms, LayerScale gammas and tokens (upstream decays tokens)."""
    depth = len(model.backbone.blocks)
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        short = name.removeprefix("backbone.")
        layer = depth + 1
        if name.startswith("backbone.") and (short in TOKENS or short.startswith("patch_embed.")):
            layer = 0
        elif name.startswith("backbone.blocks."):
            layer = int(short.split(".")[1]) + 1
        lr_mult = config.layer_decay ** (depth + 1 - layer)
        if short.startswith("patch_embed."):
            lr_mult *= config.patch_embed_lr_mult
        no_decay = name.endswith("bias") or "norm" in name or "gamma" in name or short in TOKENS
        key = (lr_mult, 0.0 if no_decay else 1.0, name.endswith("last_layer.weight"))
        group = groups.setdefault(key, {"params": [], "lr_mult": key[0], "wd_mult": key[1], "last_layer": key[2]})
        group["params"].append(param)
    return list(groups.values())


def schedules(config: DinoTrainConfig, step: int) -> dict[str, float]:
    """lr: warm-up then cosine; weight decay and teacher momentum: cosine; teacher temperature:
    linear warm-up then constant (cosine_schedule with equal start and end)."""
    return {
        "lr": cosine_schedule(config.lr, config.min_lr, step, config.steps, config.warmup_steps),
        "wd": cosine_schedule(config.weight_decay, config.weight_decay_end, step, config.steps),
        "momentum": cosine_schedule(config.momentum_teacher, config.momentum_teacher_end, step, config.steps),
        "teacher_temp": cosine_schedule(
            config.teacher_temp,
            config.teacher_temp,
            step,
            config.steps,
            config.teacher_temp_warmup_steps,
            config.teacher_temp_warmup,
        ),
    }


def compute_losses(
    student: dict, teacher: dict, masks: torch.Tensor, teacher_temp: float, batch: int, config: DinoTrainConfig
) -> dict[str, torch.Tensor]:
    """Upstream's loss accumulator: DINO local and global terms weighted by their pair counts, iBOT,
    and KoLeo per global crop (weight x 2 crops, reported as the mean over crops)."""
    n_local = config.local_crops_number
    with torch.no_grad():
        targets = sinkhorn_knopp(teacher["dino_global"], teacher_temp).unflatten(0, (N_GLOBAL, batch))
        ibot_targets = sinkhorn_knopp(teacher["ibot"], teacher_temp)
    local = dino_loss(student["dino_local"].unflatten(0, (n_local, batch)), targets, config.student_temp)
    glob = dino_loss(
        student["dino_global"].unflatten(0, (N_GLOBAL, batch)), targets, config.student_temp, ignore_diagonal=True
    )
    local_terms, global_terms = n_local * N_GLOBAL, N_GLOBAL * (N_GLOBAL - 1)
    ibot = ibot_loss(student["ibot"], ibot_targets, masks, config.student_temp)
    koleo = sum(koleo_loss(cls) for cls in student["cls"].chunk(N_GLOBAL)) / N_GLOBAL
    total = (local_terms * local + global_terms * glob) / (local_terms + global_terms)
    total = total + config.ibot_weight * ibot + config.koleo_weight * N_GLOBAL * koleo
    return {"total": total, "dino_local": local, "dino_global": glob, "ibot": ibot, "koleo": koleo}


@torch.no_grad()
def update_teacher(teacher: SSLModel, student: SSLModel, momentum: float) -> None:
    """teacher = momentum * teacher + (1 - momentum) * student, backbone and heads."""
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


def _train_state(student: SSLModel, teacher: SSLModel, optimizer, scaler, step: int) -> dict:
    return {
        "student": student.backbone.state_dict(),
        "teacher": teacher.backbone.state_dict(),
        "heads": {
            "student_dino": student.dino_head.state_dict(),
            "student_ibot": student.ibot_head.state_dict(),
            "teacher_dino": teacher.dino_head.state_dict(),
            "teacher_ibot": teacher.ibot_head.state_dict(),
        },
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "torch_rng_state": torch.get_rng_state(),
    }


def _load_train_state(state: dict, student: SSLModel, teacher: SSLModel, optimizer, scaler) -> None:
    student.backbone.load_state_dict(state["student"])
    teacher.backbone.load_state_dict(state["teacher"])
    heads = state["heads"]
    student.dino_head.load_state_dict(heads["student_dino"])
    student.ibot_head.load_state_dict(heads["student_ibot"])
    teacher.dino_head.load_state_dict(heads["teacher_dino"])
    teacher.ibot_head.load_state_dict(heads["teacher_ibot"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])


def train(config: DinoTrainConfig, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Run (or continue) training; returns the last logged metrics with ``step``.

    ``should_stop``: polled after every step; when it returns True the run saves ``last.pt`` and
    returns early (a stop button: continue later with ``resume=True``).
    """
    # -- processes, seeds, output folder --------------------------------------------------------
    info = setup_distributed(config.device)
    seed_everything(config.seed, info.rank)
    device, amp_dtype = info.device, autocast_dtype(info.device)
    out_dir, last = Path(config.out_dir), Path(config.out_dir) / "last.pt"
    if config.resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {last}")
    if not config.resume and last.exists():
        raise FileExistsError(f"{last} exists: pass --resume to continue that run, or choose another --out-dir")
    if info.is_main and not config.resume:
        (out_dir / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log

    # -- models, optimizer, state ---------------------------------------------------------------
    student, teacher = build_models(config)
    student.to(device)
    teacher.to(device)
    optimizer = torch.optim.AdamW(param_groups(student, config), lr=config.lr, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    start_step = 0
    if config.resume:
        ckpt = load_checkpoint(last, kind="dinov3")
        if ckpt["preset"] != config.preset:
            raise ValueError(f"{last} is a {ckpt['preset']} run, but --preset is {config.preset}")
        _load_train_state(ckpt["train_state"], student, teacher, optimizer, scaler)
        start_step = int(ckpt["step"])
        torch.set_rng_state(ckpt["train_state"]["torch_rng_state"])  # the loop reseeds per step anyway
    model = student
    if info.distributed:
        model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)

    # -- data -----------------------------------------------------------------------------------
    preset = DINOV3_PRESETS[config.preset]
    augmentation = MultiCropAugmentation(
        config.global_crop_size,
        config.local_crop_size,
        config.local_crops_number,
        config.global_crops_scale,
        config.local_crops_scale,
        preset.mean,
        preset.std,
        config.horizontal_flips,
    )
    dataset = ManifestImages(config.dataset_dir, augmentation)
    batches = iter(
        build_loader(
            dataset,
            config.batch_size,
            config.seed,
            start_step,
            info.rank,
            info.world_size,
            config.num_workers,
            pin_memory=device.type == "cuda",
        )
    )
    grid = (config.global_crop_size // preset.patch_size,) * 2
    end_step = config.stop_at or config.steps
    if info.is_main:
        print(
            f"dinov3: {info.world_size} process(es) on {device}, amp {amp_dtype or 'off (fp32)'}, "
            f"global batch {config.batch_size * info.world_size}, {len(dataset)} images, "
            f"steps {start_step} -> {end_step} of {config.steps}",
            flush=True,
        )

    # -- the loop -------------------------------------------------------------------------------
    logger = MetricsLogger(out_dir, enabled=info.is_main)
    bar = tqdm(total=end_step, initial=start_step, desc="dinov3", unit="step", disable=not info.is_main)
    metrics: dict[str, float] = {}
    for step in range(start_step, end_step):
        sched = schedules(config, step)
        for group in optimizer.param_groups:
            frozen = group["last_layer"] and step < config.freeze_last_layer_steps
            group["lr"] = 0.0 if frozen else sched["lr"] * group["lr_mult"]
            group["weight_decay"] = sched["wd"] * group["wd_mult"]

        # Every random draw of a step (masks, the student's RoPE coordinate jitter) is seeded by
        # (seed, step, rank), as the batches are: a resumed run repeats an uninterrupted one exactly.
        rng = random.Random(f"{config.seed}-{step}-{info.rank}")
        torch.manual_seed(rng.getrandbits(63))
        batch = next(batches)
        global_crops = batch["global_crops"].transpose(0, 1).flatten(0, 1).to(device, non_blocking=True)
        local_crops = batch["local_crops"].transpose(0, 1).flatten(0, 1).to(device, non_blocking=True)
        masks = sample_masks(
            N_GLOBAL * config.batch_size, grid, config.mask_ratio_min_max, config.mask_probability, rng
        ).to(device)

        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            with torch.no_grad():
                teacher_out = teacher(global_crops, masks, mask_inputs=False)
            student_out = model(global_crops, masks, local_crops)
            losses = compute_losses(student_out, teacher_out, masks, sched["teacher_temp"], config.batch_size, config)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        if config.clip_grad > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(student.parameters(), config.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        update_teacher(teacher, student, sched["momentum"])
        done = step + 1
        bar.update(1)
        stopping = should_stop is not None and should_stop()
        if stopping:
            end_step = done
            print(f"dinov3: stop requested at step {done}; saving and returning", flush=True)

        if done % config.log_every == 0 or done == end_step:
            values = torch.stack([losses[k].detach().float() for k in LOSS_KEYS])
            if info.distributed:
                dist.all_reduce(values)
                values /= info.world_size
            metrics = {k: float(v) for k, v in zip(LOSS_KEYS, values.tolist(), strict=True)}
            metrics.update(lr=sched["lr"], momentum=sched["momentum"], teacher_temp=sched["teacher_temp"])
            logger.log(done, metrics)
            bar.set_postfix(loss=f"{metrics['total']:.4f}", lr=f"{sched['lr']:.2e}")
        if info.is_main and (done % config.save_every == 0 or done == end_step):
            state = _train_state(student, teacher, optimizer, scaler, done)
            save_checkpoint(
                last,
                kind="dinov3",
                preset=config.preset,
                config=config.to_dict(),
                step=done,
                model=state["teacher"],
                train_state=state,
                metrics=metrics,
            )
        if stopping:
            break
    bar.close()
    logger.close()
    if info.distributed:
        dist.barrier()
    return {"step": end_step, **metrics}
