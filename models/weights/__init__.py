"""Checkpoint readers and converters for the official DINOv3 and VGGT releases."""
