"""Training data and (next) trainers.

Today: dataset preprocessing and the synthetic multi-view generator (:mod:`edgescene.train.data`).
The DINOv3 and VGGT trainers arrive with the training issue.
"""
