"""Trainers (DINOv3, VGGT) and dataset preprocessing.

Built in the data and training issues; this package is empty until then and the CLI exposes no
training command yet.
"""
