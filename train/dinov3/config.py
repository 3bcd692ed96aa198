"""The DINOv3 trainer's configuration: one frozen, validated dataclass.

Defaults follow ``dinov3/configs/ssl_default_config.yaml`` of facebookresearch/dinov3 (the ViT-L
IN-1k example ``vitl_im1k_lin834.yaml``), with three deliberate differences:

- ``lr`` is the absolute peak learning rate. Upstream scales a base lr of 1e-3 by
  ``4 * sqrt(global_batch / 1024)``; do that yourself when reproducing it.
- Schedules are counted in optimizer steps, not epochs (upstream: 1250 iterations per epoch).
- The heads are small by default (4096 prototypes, hidden 512, bottleneck 128), which is enough
  for fine-tuning on a few thousand images. Upstream uses 65536 / 2048 / 256 (ViT-7B: DINO
  262144 / 8192 / 512, iBOT 98304 / 4096 / 384); pass ``--head-prototypes 65536
  --head-hidden-dim 2048 --head-bottleneck-dim 256`` to match it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from edgescene.models.dinov3 import DINOV3_PRESETS


@dataclass(frozen=True)
class DinoTrainConfig:
    # data and outputs
    dataset_dir: str  # a folder holding manifest.json (`edgescene preprocess` / `edgescene synth`)
    out_dir: str  # last.pt and metrics.jsonl go here
    preset: str = "dinov3_vits16"  # a DINOV3_PRESETS name
    init: str | None = None  # released backbone to start from (heads start fresh); None: random init
    resume: bool = False  # continue exactly from out_dir/last.pt
    # length and optimizer
    steps: int = 10000  # total optimizer steps; every schedule spans them
    stop_at: int | None = None  # end this session after this step (schedules unchanged); continue with resume
    batch_size: int = 32  # images per process (upstream: 64 per GPU)
    lr: float = 5e-4  # peak learning rate, reached after warmup_steps (see the module docstring)
    min_lr: float = 1e-6  # cosine end
    warmup_steps: int = 1000  # linear lr warm-up from 0 (upstream: 10 epochs)
    weight_decay: float = 0.04  # cosine from this ...
    weight_decay_end: float = 0.4  # ... to this
    clip_grad: float = 3.0  # max gradient norm; 0 disables clipping
    layer_decay: float = 0.9  # lr multiplier per block below the last (tokens and patch_embed count as layer 0)
    patch_embed_lr_mult: float = 0.2  # extra lr multiplier of the patch embedding
    freeze_last_layer_steps: int = 1250  # heads' last layer has lr 0 this long (upstream: 1 epoch)
    # teacher
    momentum_teacher: float = 0.992  # EMA momentum, cosine from this ...
    momentum_teacher_end: float = 1.0  # ... to this
    teacher_temp_warmup: float = 0.04  # teacher temperature, linear from this ...
    teacher_temp: float = 0.07  # ... to this over teacher_temp_warmup_steps, then constant
    teacher_temp_warmup_steps: int = 3000  # upstream: 30 epochs
    student_temp: float = 0.1
    # multi-crop augmentation
    global_crop_size: int = 224  # multiple of the patch size (7B pretrain: 256)
    local_crop_size: int = 96  # multiple of the patch size (7B pretrain: 112)
    local_crops_number: int = 8
    global_crops_scale: tuple[float, float] = (0.32, 1.0)  # RandomResizedCrop area fraction
    local_crops_scale: tuple[float, float] = (0.05, 0.32)
    horizontal_flips: bool = True  # p=0.5 per crop (off for upstream's 7B)
    # iBOT masking
    mask_ratio_min_max: tuple[float, float] = (0.1, 0.5)
    mask_probability: float = 0.5  # fraction of global crops that get a mask
    # heads (separate DINO and iBOT heads of the same size)
    head_prototypes: int = 4096  # K; upstream 65536
    head_hidden_dim: int = 512  # upstream 2048
    head_bottleneck_dim: int = 128  # upstream 256
    # loss weights
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    # bookkeeping
    log_every: int = 10  # steps between metrics.jsonl lines
    save_every: int = 1000  # steps between saves of last.pt (and one at the end)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 4  # data-loading processes per training process

    def __post_init__(self) -> None:
        if self.preset not in DINOV3_PRESETS:
            raise ValueError(f"preset {self.preset!r} is not a DINOv3 preset; valid: {sorted(DINOV3_PRESETS)}")
        patch = DINOV3_PRESETS[self.preset].patch_size
        positive = (
            "steps",
            "batch_size",
            "global_crop_size",
            "local_crop_size",
            "local_crops_number",
            "head_prototypes",
            "head_hidden_dim",
            "head_bottleneck_dim",
            "log_every",
            "save_every",
            "lr",
            "teacher_temp",
            "teacher_temp_warmup",
            "student_temp",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        non_negative = (
            "min_lr",
            "warmup_steps",
            "weight_decay",
            "weight_decay_end",
            "clip_grad",
            "freeze_last_layer_steps",
            "teacher_temp_warmup_steps",
            "ibot_weight",
            "koleo_weight",
            "num_workers",
            "patch_embed_lr_mult",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("global_crop_size", "local_crop_size"):
            if getattr(self, name) % patch:
                raise ValueError(f"{name} must be a multiple of the patch size {patch}, got {getattr(self, name)}")
        for name in ("momentum_teacher", "momentum_teacher_end", "mask_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        for name in ("global_crops_scale", "local_crops_scale", "mask_ratio_min_max"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high <= 1.0:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high <= 1, got {getattr(self, name)}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must not exceed steps ({self.steps})")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            raise ValueError(f"stop_at must be in [1, steps={self.steps}], got {self.stop_at}")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """The resolved configuration, one ``name = value`` line per field (printed at start-up)."""
        width = max(len(f.name) for f in fields(self))
        return "\n".join(f"  {f.name:<{width}} = {getattr(self, f.name)!r}" for f in fields(self))
