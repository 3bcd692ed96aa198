"""DINOv3 training losses and the iBOT block-wise mask generator.

Follows facebookresearch/dinov3: ``dinov3/loss/dino_clstoken_loss.py`` (Sinkhorn-Knopp centring,
DINO cross-entropy), ``dinov3/loss/ibot_patch_loss.py`` (masked-patch loss),
``dinov3/loss/koleo_loss.py`` (KoLeo) and ``dinov3/data/masking.py`` + ``dinov3/data/collate.py``
(block-wise masks). Everything is computed in float32.
"""

from __future__ import annotations

import math
import random

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _all_reduce(x: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=op)
    return x


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Teacher targets: (B, K) logits -> (B, K) probabilities, each row summing to 1.

    Alternately normalises prototypes (columns) to equal mass 1/K and samples (rows) to 1/B, over
    the samples of every process (all-reduced when distributed; B is the global count, so ranks may
    hold different numbers of rows, as the masked patches of iBOT do). A global max is subtracted
    before ``exp`` for range safety; it cancels in the first normalisation.
    """
    logits = teacher_logits.float() / teacher_temp
    n_local = torch.tensor(float(logits.shape[0]), device=logits.device)
    peak = logits.max() if logits.numel() else torch.tensor(-math.inf, device=logits.device)
    peak = _all_reduce(peak.clone(), dist.ReduceOp.MAX)
    q = torch.exp(logits - peak).t()  # (K, B)
    n_total = _all_reduce(n_local).clamp(min=1.0)
    k = q.shape[0]
    q /= _all_reduce(q.sum()).clamp(min=1e-30)
    for _ in range(n_iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True)).clamp(min=1e-30)  # each prototype: mass 1/K
        q /= k
        q /= q.sum(dim=0, keepdim=True).clamp(min=1e-30)  # each sample: mass 1/B
        q /= n_total
    q *= n_total
    return q.t()


def dino_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float = 0.1, ignore_diagonal: bool = False
) -> torch.Tensor:
    """Cross-entropy of every student crop against every teacher crop, averaged.

    student_logits: (S, B, K) raw logits; teacher_probs: (T, B, K) rows summing to 1.
    ``ignore_diagonal`` drops the pairs ``s == t`` (a global crop is not compared with itself).
    """
    s_crops, batch, _ = student_logits.shape
    t_crops = teacher_probs.shape[0]
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    pairs = -torch.einsum("sbk,tbk->st", log_p, teacher_probs.float())
    if not ignore_diagonal:
        return pairs.sum() / (batch * s_crops * t_crops)
    n_diag = min(s_crops, t_crops)
    pairs = torch.diagonal_scatter(pairs, pairs.new_zeros(n_diag))
    return pairs.sum() / (batch * (s_crops * t_crops - n_diag))


def ibot_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor, student_temp: float = 0.1
) -> torch.Tensor:
    """Masked-patch cross-entropy, each image weighted by 1 / its number of masked patches.

    student_logits, teacher_probs: (M, K) for the M masked patches, in the order of
    ``masks.nonzero()``; masks: (N, P) bool over all N global crops. Returns the sum of per-image
    means divided by N (images without a mask count in N, as upstream).
    """
    per_patch = torch.sum(teacher_probs.float() * F.log_softmax(student_logits.float() / student_temp, dim=-1), dim=-1)
    weights = (1.0 / masks.sum(-1).clamp(min=1)).unsqueeze(-1).expand_as(masks)[masks]
    return -(per_patch * weights).sum() / masks.shape[0]


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator: ``-mean(log(distance to the nearest neighbour))`` of
    the L2-normalised rows of x (B, D); lower when the points spread out on the sphere."""
    x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    dots = x @ x.t()
    dots.fill_diagonal_(-1.0)
    nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()


class MaskingGenerator:
    """Block-wise masks on an (h, w) patch grid, as upstream ``MaskingGenerator``: rectangles of at
    least ``min_num_patches`` patches with aspect ratio in [min_aspect, 1/min_aspect], added until
    the requested number of patches is masked (or no rectangle fits)."""

    def __init__(
        self, grid: tuple[int, int], max_num_patches: float, min_num_patches: int = 4, min_aspect: float = 0.3
    ) -> None:
        self.height, self.width = grid
        self.max_num_patches = max_num_patches
        self.min_num_patches = min_num_patches
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))

    def _add_block(self, mask: torch.Tensor, max_patches: float, rng: random.Random) -> int:
        added = 0
        for _ in range(10):
            area = rng.uniform(self.min_num_patches, max_patches)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < self.width and h < self.height:
                top, left = rng.randint(0, self.height - h), rng.randint(0, self.width - w)
                block = mask[top : top + h, left : left + w]
                if 0 < h * w - int(block.sum()) <= max_patches:
                    added = h * w - int(block.sum())
                    block.fill_(True)
            if added > 0:
                break
        return added

    def __call__(self, num_patches: int, rng: random.Random) -> torch.Tensor:
        """(h, w) bool mask with about ``num_patches`` True entries."""
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        count = 0
        while count < num_patches:
            added = self._add_block(mask, min(num_patches - count, self.max_num_patches), rng)
            if added == 0:
                break
            count += added
        return mask


def sample_masks(
    n_images: int, grid: tuple[int, int], ratio_min_max: tuple[float, float], probability: float, rng: random.Random
) -> torch.Tensor:
    """Masks for a batch of global crops, as upstream ``collate_data_and_cast``: the first
    ``int(n_images * probability)`` get masks whose upper bounds are spread by
    ``linspace(ratio_min, ratio_max)``, the rest none; then the list is shuffled.
    Returns (n_images, h*w) bool."""
    n_patches = grid[0] * grid[1]
    generator = MaskingGenerator(grid, max_num_patches=0.5 * n_patches)
    n_masked = int(n_images * probability)
    bounds = torch.linspace(ratio_min_max[0], ratio_min_max[1], n_masked + 1).tolist()
    masks = [generator(int(n_patches * bounds[i + 1]), rng) for i in range(n_masked)]
    masks += [generator(0, rng) for _ in range(n_masked, n_images)]
    rng.shuffle(masks)
    return torch.stack(masks).flatten(1)
