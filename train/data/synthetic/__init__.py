"""Synthetic multi-view scenes with exact ground truth (depth, intrinsics, camera-from-world poses).

The project's own real-geometry test bed: procedural scenes (:mod:`.scene`), exact ray casting
(:mod:`.raycast`), camera paths (:mod:`.trajectories`), datasets on disk (:mod:`.dataset`) and the
bundled sample video (:mod:`.sample`). numpy + OpenCV (+ PyAV for video); no torch.
"""

from edgescene.train.data.synthetic.dataset import (
    SceneSequence,
    SynthConfig,
    SynthSummary,
    generate_dataset,
    render_sequence,
)
from edgescene.train.data.synthetic.raycast import render
from edgescene.train.data.synthetic.scene import Scene, random_scene
from edgescene.train.data.synthetic.trajectories import (
    ALL_TRAJECTORIES,
    LOOP_TRAJECTORIES,
    TRAJECTORIES,
    look_at,
    make_trajectory,
)

__all__ = [
    "ALL_TRAJECTORIES",
    "LOOP_TRAJECTORIES",
    "TRAJECTORIES",
    "Scene",
    "SceneSequence",
    "SynthConfig",
    "SynthSummary",
    "generate_dataset",
    "look_at",
    "make_trajectory",
    "random_scene",
    "render",
    "render_sequence",
]
