"""Datasets on disk: the manifest schema, preprocessing of users' imagery, and the synthetic
multi-view generator. numpy / OpenCV / PyAV / tifffile only: importing this never imports torch."""
