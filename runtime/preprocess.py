"""The runtime's image preprocessing: upstream VGGT's ``load_and_preprocess_images`` and friends.

The code lives in :mod:`edgescene.core.preprocess` (the trainers, the exporter and the evaluation
use the same functions); this module is the public place a runtime user imports it from::

    from edgescene.runtime.preprocess import load_and_preprocess_images
    images = load_and_preprocess_images(["a.jpg", "b.png"], mode="crop")   # (S, 3, H, W) float32 in [0, 1]
"""

from edgescene.core.preprocess import (
    MODES,
    ORIENTATIONS,
    PAD_VALUE,
    TARGET_SIZE,
    Resize,
    choose_model_size,
    decode_image,
    depth_to_source,
    fit,
    load_and_preprocess_images,
    model_size_for,
    place,
    prepare,
    prepare_batch,
    preprocess_frames,
    resize_pixels,
    upstream_resize,
    upstream_size,
)

__all__ = [
    "MODES",
    "ORIENTATIONS",
    "PAD_VALUE",
    "TARGET_SIZE",
    "Resize",
    "choose_model_size",
    "decode_image",
    "depth_to_source",
    "fit",
    "load_and_preprocess_images",
    "model_size_for",
    "place",
    "prepare",
    "prepare_batch",
    "preprocess_frames",
    "resize_pixels",
    "upstream_resize",
    "upstream_size",
]
