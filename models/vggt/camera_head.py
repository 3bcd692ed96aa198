"""VGGT camera head: iterative adaLN refinement of a 9-D pose encoding per frame.

Follows ``vggt/heads/camera_head.py``: the camera token of the last aggregator layer (B, S, 2C) is
layer-normalised, then refined ``num_iterations`` times. Each iteration embeds the current
(detached) estimate, or a learned empty pose on the first pass, into shift / scale / gate
(DiT-style adaLN), runs a trunk of transformer blocks that attend across the S frames, and adds a
predicted delta. The raw estimate accumulates; the copy returned per iteration is activated
(linear translation and quaternion, ReLU on the two fields of view).

With ``motion=True`` (an edgescene addition, :mod:`.motion`; not in upstream checkpoints) the
normalised camera tokens first receive the embedded motion cues of the frame's patch tokens
against the first frame's.

Pose encoding ``absT_quaR_FoV``: ``[t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w]``, translation of
the camera-from-world extrinsic, XYZW quaternion, fields of view in radians; decode with
:func:`edgescene.core.geometry.decode_pose`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgescene.models.layers import Block, Mlp
from edgescene.models.vggt.motion import MotionCues

POSE_ENCODING_DIM = 9


def activate_pose(pose: torch.Tensor) -> torch.Tensor:
    """Linear translation and quaternion, ReLU on the fields of view. pose: (..., 9)."""
    return torch.cat((pose[..., :7], F.relu(pose[..., 7:])), dim=-1)


class CameraHead(nn.Module):
    """tokens (B, S, P, dim_in) of the last layer -> list of ``num_iterations`` poses (B, S, 9)."""

    def __init__(
        self,
        dim_in: int = 2048,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        motion: bool = False,
    ) -> None:
        super().__init__()
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.trunk = nn.Sequential(
            *(Block(dim_in, num_heads, mlp_ratio, layerscale_init=init_values) for _ in range(trunk_depth))
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)
        self.motion = MotionCues(dim_in) if motion else None  # called by the model, which passes its output
        self.init_pose_prior()

    def init_pose_prior(self, iterations: int = 4, fov_rad: float = 1.0) -> None:
        """Random init only (checkpoints replace it): the refinement deltas start small and add up to
        the identity rotation and a ~57 degree field of view, a trained model's typical output. Gives
        training from scratch a sane start and random-weight test models well-conditioned cameras."""
        fc2 = self.pose_branch.fc2
        if fc2.weight.is_meta:
            return
        nn.init.normal_(fc2.weight, std=1e-3)
        with torch.no_grad():
            fc2.bias.zero_()
            fc2.bias[6] = 1.0 / iterations
            fc2.bias[7:] = fov_rad / iterations

    def forward(
        self,
        last_layer_tokens: torch.Tensor,
        num_iterations: int = 4,
        motion: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """``motion``: the token embedding (B, S, dim_in) and pose offset (B, S, 9) of :attr:`motion`
        for these tokens (None without)."""
        tokens = self.token_norm(last_layer_tokens[:, :, 0])
        if (motion is None) != (self.motion is None):
            raise ValueError("pass the motion cues exactly when the camera head has them")
        offset = None
        if motion is not None:
            tokens = tokens + motion[0]
            offset = motion[1]
        b, s, _ = tokens.shape
        pred: torch.Tensor | None = None
        outputs = []
        for _ in range(num_iterations):
            if pred is None:
                conditioning = self.embed_pose(self.empty_pose_tokens.expand(b, s, -1))
            else:
                conditioning = self.embed_pose(pred.detach())
            shift, scale, gate = self.poseLN_modulation(conditioning).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            x = self.trunk(x)
            delta = self.pose_branch(self.trunk_norm(x))
            if pred is None:
                pred = delta if offset is None else delta + offset
            else:
                pred = pred + delta
            outputs.append(activate_pose(pred))
        return outputs
