"""Maps the field uses, made from a reconstruction: COLMAP sparse models (pycolmap), a live
browser viewer (viser) and the Sim(3) pose graph of loop closure (gtsam).

Needs the ``mapping`` extra; imports the runtime and the core, never torch or the models.
"""
