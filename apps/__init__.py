"""FastAPI service (``edgescene serve``) and Gradio web app (``edgescene app``).

Thin layers: reconstruction goes through ``edgescene.runtime`` (reconstruct_to_folder,
Reconstructor, SceneCache), training through ``edgescene.train.launch.start_training``, model
checks through ``edgescene.models.weights.inspect`` and export through ``edgescene.export.pipeline``.
"""
