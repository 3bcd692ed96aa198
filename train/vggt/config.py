"""The VGGT trainer's configuration: one frozen, validated dataclass (printed at start, stored in checkpoints).

Defaults follow upstream's fine-tuning example (facebookresearch/vggt ``training/config/default.yaml``):
AdamW with lr 5e-5 and weight decay 0.05, 5 % linear warm-up then cosine to 1e-8, gradient clipping
at 1.0, loss weights camera 5 / depth 1, 2-24 frames per sequence (``img_nums``). Upstream's example
disables the point head; here its loss is on by default (weight 1, the commented upstream value) so
the released point-map branch is trained too: ``point_weight=0`` freezes that head instead.

``self_supervised=True`` trains on footage without depth or cameras
(:mod:`edgescene.train.vggt.self_supervised`: photometric reprojection, smoothness, depth/point-map
and camera/point-map consistency; weights ``photometric_weight`` ... ``camera_consistency_weight``);
``dataset_dir`` may then also be a folder of videos and image sequences. ``patience`` stops a run
after that many validations without improvement (the best checkpoint is kept as ``best.pt``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

from edgescene.models.vggt.config import VGGT_PRESETS

FREEZE_CHOICES = ("none", "aggregator", "patch_embed")
POINT_GRADIENT_CHOICES = ("normal", "grad")
DEFAULT_VAL_FRACTION = 0.1
# What self-supervised training starts from instead of the fine-tune's defaults below (the CLI's
# --self-supervised, the web app's checkbox, VGGTTrainConfig.self_supervised_run), measured on the
# thermal-like bench (docs/self_supervised.md): only the depth head trains, so the aggregator and the
# camera head hold and the cameras come out exactly as before; the learning rate and window sizes
# the tuning runs chose, no augmentation, and a fifth of the sequences held out to pick best.pt.
SELF_SUPERVISED_DEFAULTS: dict = {
    "freeze": "aggregator",
    "intrinsics_weight": 0.0,
    "lr": 2e-5,
    "frames_per_sequence": (3, 4),
    "augment": False,
    "patience": 3,
    "val_fraction": 0.2,
}


@dataclass(frozen=True)
class VGGTTrainConfig:
    dataset_dir: str  # a manifest folder (``edgescene synth`` / ``preprocess`` with depth + cameras)
    out_dir: str  # last.pt, metrics.jsonl and tensorboard/ go here
    preset: str = "vggt_1b"  # model size, a key of VGGT_PRESETS
    init: str | None = None  # weights to start from: an official file, a Hub id, or an edgescene checkpoint
    resume: str | None = None  # a checkpoint to continue (optimizer, step, RNG); "last" = out_dir/last.pt
    freeze: Literal["none", "aggregator", "patch_embed"] = "none"  # upstream's example freezes the aggregator
    steps: int = 1000  # optimizer steps in total (the schedule spans them)
    batch_size: int = 1  # sequences per step per process (global batch = batch_size * world size)
    frames_per_sequence: tuple[int, int] = (
        2,
        8,
    )  # each step draws its frame count in [min, max] (upstream img_nums 2..24)
    max_stride: int = 1  # a sample takes every s-th frame, s drawn in 1..max_stride (1: consecutive frames)
    image_height: int = 392  # training size; multiples of the preset's patch size
    image_width: int = 518
    lr: float = 5e-5  # upstream fine-tuning value; the paper trained from scratch at 2e-4
    min_lr: float = 1e-8  # warm-up start and cosine end, as upstream
    warmup_fraction: float = 0.05
    weight_decay: float = 0.05  # on >= 2-D weights only (not biases, norms, tokens)
    clip_grad: float = 1.0  # max grad norm, per module (aggregator, each head), as upstream
    camera_weight: float = 5.0  # 0 disables a loss and freezes its head
    depth_weight: float = 1.0
    point_weight: float = 1.0
    match_weight: float = 1.0  # the camera head's motion cues (presets with them): their matches vs the truth
    point_gradient: Literal["normal", "grad"] = "normal"  # gradient term of the point loss (upstream: normal)
    augment: bool = True  # colour jitter + random zoom, same for all frames of a sample
    gradient_checkpointing: bool = False
    log_every: int = 10
    save_every: int = 500  # also validates; a checkpoint is always written at the end
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 2
    val_fraction: float | None = None  # held-out share of the sequences (default 0.1 without val_dataset)
    val_dataset: str | None = None  # a separate manifest folder for validation
    self_supervised: bool = False  # losses from the model's own predictions: no depth or cameras needed
    photometric_weight: float = 1.0  # self-supervised terms (self_supervised=True only)
    smoothness_weight: float = 1e-3
    # off by default (SelfSupervisedConfig says why)
    point_consistency_weight: float = 0.0
    camera_consistency_weight: float = 0.0
    automask: bool = True  # Monodepth2's auto-masking of pixels an unwarped frame explains better
    warp_poses: str = "matches"  # the warp's relative poses: "matches" (measured on the frames) or "camera_head"
    match_pose_weight: float = 0.0  # camera head against the measured poses (warp_poses="matches")
    metadata_json: str | None = None  # self-supervised raw footage: preprocess's metadata JSON (known intrinsics)
    intrinsics_weight: float = 0.1  # camera head's fields of view against the data's known intrinsics, if any
    confidence_alpha: float = 0.0  # > 0: weight the self-supervised terms by the heads' confidence (c e - a log c)
    patience: int | None = None  # validations without improvement before stopping early (None: never)
    # L2-SP (Li, Grandvalet & Davoine 2018): anchor_weight * sum((w - w_start)^2) over the trained weights,
    # so a fine-tune stays near where it started; 0: off
    anchor_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.preset not in VGGT_PRESETS:
            raise ValueError(f"preset {self.preset!r} is unknown; valid: {', '.join(sorted(VGGT_PRESETS))}")
        if self.freeze not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {self.freeze!r}")
        if self.point_gradient not in POINT_GRADIENT_CHOICES:
            raise ValueError(f"point_gradient must be one of {POINT_GRADIENT_CHOICES}, got {self.point_gradient!r}")
        for name in ("steps", "batch_size", "log_every", "save_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.seed < 0 or self.num_workers < 0:
            raise ValueError(f"seed and num_workers must be >= 0, got {self.seed} and {self.num_workers}")
        lo, hi = self.frames_per_sequence
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(
                f"frames_per_sequence must be (min, max) with 1 <= min <= max, got {self.frames_per_sequence}"
            )
        object.__setattr__(self, "frames_per_sequence", (lo, hi))
        patch = VGGT_PRESETS[self.preset].patch_size
        for name in ("image_height", "image_width"):
            value = getattr(self, name)
            if value < patch or value % patch:
                raise ValueError(
                    f"{name} must be a positive multiple of the patch size {patch} of {self.preset}, "
                    f"got {value}; e.g. {max(patch, round(value / patch) * patch)}"
                )
        for name in (
            "lr",
            "min_lr",
            "weight_decay",
            "clip_grad",
            "camera_weight",
            "depth_weight",
            "point_weight",
            "match_weight",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.max_stride, bool) or int(self.max_stride) != self.max_stride or self.max_stride < 1:
            raise ValueError(f"max_stride must be a whole number >= 1, got {self.max_stride!r}")
        if self.lr <= 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 < min_lr <= lr, got lr {self.lr} and min_lr {self.min_lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.camera_weight == self.depth_weight == self.point_weight == 0 and not self.self_supervised:
            raise ValueError("camera_weight, depth_weight and point_weight are all 0: nothing to train")
        for name in (
            "photometric_weight",
            "smoothness_weight",
            "point_consistency_weight",
            "camera_consistency_weight",
            "match_pose_weight",
            "intrinsics_weight",
            "confidence_alpha",
            "anchor_weight",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.metadata_json is not None and not self.self_supervised:
            raise ValueError(
                "--metadata-json belongs to self-supervised training from raw footage (--self-supervised); a "
                "supervised dataset is preprocessed first: `edgescene preprocess --metadata-json ...`"
            )
        if self.warp_poses not in ("matches", "camera_head"):
            raise ValueError(f"warp_poses must be 'matches' or 'camera_head', got {self.warp_poses!r}")
        if self.self_supervised and self.photometric_weight == 0:
            raise ValueError(
                "self-supervised training needs the photometric loss (photometric_weight > 0): the other terms "
                "only tie the heads together"
            )
        if self.self_supervised and self.frames_per_sequence[0] < 2:
            raise ValueError(
                "self-supervised training compares frames with each other: frames_per_sequence must start at 2 "
                f"or more, got {self.frames_per_sequence}"
            )
        if self.patience is not None and (isinstance(self.patience, bool) or self.patience < 1):
            raise ValueError(f"patience must be None or an integer >= 1, got {self.patience!r}")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.val_dataset is not None:
            if self.val_fraction not in (None, 0, 0.0):
                raise ValueError("give either val_fraction (a held-out share of dataset_dir) or val_dataset, not both")
            object.__setattr__(self, "val_fraction", 0.0)
        elif self.val_fraction is None:
            object.__setattr__(self, "val_fraction", DEFAULT_VAL_FRACTION)
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @classmethod
    def self_supervised_run(cls, **values) -> VGGTTrainConfig:
        """A self-supervised configuration: ``values`` over :data:`SELF_SUPERVISED_DEFAULTS` over the
        class defaults."""
        return cls(**{**SELF_SUPERVISED_DEFAULTS, **values, "self_supervised": True})

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_fraction * self.steps))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frames_per_sequence"] = list(self.frames_per_sequence)
        return d

    def format(self) -> str:
        """The resolved configuration, one ``name = value`` per line."""
        width = max(len(f.name) for f in fields(self))
        return "\n".join(f"  {f.name:<{width}} = {getattr(self, f.name)!r}" for f in fields(self))
