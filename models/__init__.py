"""PyTorch DINOv3 and VGGT (placeholder during bring-up)."""
