"""Maps the field uses, made from a reconstruction: COLMAP sparse models (pycolmap) and a live
browser viewer (viser).

Needs the ``mapping`` extra; imports the runtime and the core, never torch or the models.
"""
