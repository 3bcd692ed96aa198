"""FastAPI service and Gradio app, thin layers over ``edgescene.runtime`` and ``edgescene.train``.

Built in the apps issue; this package is empty until then.
"""
