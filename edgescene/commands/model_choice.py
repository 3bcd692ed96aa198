"""What ``--model`` may name, checked before anything loads, and the one line that says what runs.

Accepted by ``reconstruct``, ``eval``, ``bench`` and ``export``:

- an exported artifact folder (``edgescene export``), run by its own backend;
- a checkpoint file (``model.pt``, ``.pth``, ``.safetensors``), run by the PyTorch backend (CUDA when
  present) or exported from;
- a Hub id (``facebook/VGGT-1B``, ``facebook/VGGT-1B-Commercial``), taken from the local Hugging Face
  cache or downloaded; offline it fails at once with the command that fixes it;
- a Triton model (``triton://host:port/model[?protocol=grpc]``): the model call goes to a Triton
  Inference Server, everything else runs here (reconstruct, eval, bench);
- a preset name (``vggt_small``) only with ``--weights`` (its checkpoint) or ``--random-weights``:
  a preset alone is random weights, and nobody should get them without asking.
"""

from __future__ import annotations

from pathlib import Path

PRESET_PREFIXES = ("vggt_", "dinov3_")
REAL_MODEL_HINT = (
    "for real footage use VGGT-1B: --model facebook/VGGT-1B (or `edgescene download` it and pass "
    "the model.pt path); see docs/models.md"
)
MODEL_HELP = (
    "an exported artifact folder (edgescene export), a checkpoint file (model.pt / .safetensors), a Hub id "
    "(facebook/VGGT-1B, facebook/VGGT-1B-Commercial), a Triton model (triton://host:port/model), or a "
    "preset name with --weights or --random-weights"
)


FAST_ATTENTION_HELP = (
    "VGGT's global attention with token merging (training-free, FastVGGT-style): several times faster "
    "at many frames, close to but not exactly the exact model; PyTorch models turn it on, exported "
    "ones must have been exported with --fast-attention"
)


class ModelChoiceError(ValueError):
    """``--model`` names something that must not run as given; the message says what to pass instead."""


def is_preset_name(name: str) -> bool:
    return name.startswith(PRESET_PREFIXES) and "/" not in name and not Path(name).exists()


def check_model_choice(
    model: str | None, weights: str | None = None, random_weights: bool = False, has_weights_option: bool = True
) -> None:
    """Refuse a preset without weights unless ``random_weights``; refuse contradictory options.
    ``has_weights_option``: the command takes ``--weights`` (export, bench); otherwise the checkpoint
    file itself goes in ``--model``."""
    if model is None:
        if random_weights:
            raise ModelChoiceError("--random-weights goes with a preset name in --model (e.g. --model vggt_tiny)")
        return
    if is_preset_name(model):
        if weights is None and not random_weights:
            how = "its checkpoint with --weights FILE" if has_weights_option else "the checkpoint file as --model"
            raise ModelChoiceError(
                f"--model {model} is a preset: without --weights it has random weights and predicts noise. "
                f"Pass {how}, or --random-weights to run it anyway (tests, timing); "
                f"{REAL_MODEL_HINT}"
            )
        if weights is not None and random_weights:
            raise ModelChoiceError("--weights and --random-weights contradict each other; pass one")
    elif random_weights:
        raise ModelChoiceError(f"--random-weights applies to preset names only, not {model!r}")
