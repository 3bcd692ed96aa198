"""Loading DINOv3 backbones from the three checkpoint forms users have.

1. The official release: a flat state_dict ``.pth`` whose keys are exactly the module keys
   (``dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth``). The ``-XXXXXXXX`` suffix is the SHA-256
   prefix of the file and is verified.
2. Training checkpoints of the upstream trainer (``{"teacher": {"backbone.*", "dino_head.*",
   "ibot_head.*"}}``) and of DDP / torch.compile (``module.``, ``_orig_mod.`` prefixes), and of this
   project's trainer (``{"model": ...}`` / ``{"state_dict": ...}`` with the official layout).
3. Hugging Face ``transformers`` DINOv3 safetensors (``facebook/dinov3-*``), converted by the pure
   key mapping :func:`hf_to_official`.

The preset is detected from the keys and shapes (SAT-493M ViT-L by its ``local_cls_norm`` keys;
the two ViT-7B releases share one key set, so the SAT one is recognised by its released hash or
must be named). Heads of training checkpoints (``dino_head``/``ibot_head``) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from edgescene.models.dinov3 import DINOV3_PRESETS, DinoV3Config, DinoVisionTransformer
from edgescene.models.layers.mlp import swiglu_hidden_dim
from edgescene.models.weights.common import (
    CheckpointError,
    build_and_load,
    read_checkpoint,
    strip_prefixes,
    verify_name_hash,
)

# Released file hashes (dinov3/hub/backbones.py) -> preset, used only to name the 7B SAT release.
RELEASED_HASHES = {
    "08c60483": "dinov3_vits16",
    "4057cbaa": "dinov3_vits16plus",
    "73cec8be": "dinov3_vitb16",
    "8aa4cbdd": "dinov3_vitl16",
    "eadcf0ff": "dinov3_vitl16_sat493m",
    "46503df0": "dinov3_vitl16plus",
    "7c1da9a5": "dinov3_vith16plus",
    "a955f4ea": "dinov3_vit7b16",
    "a6675841": "dinov3_vit7b16_sat493m",
}
_TRAINING_PREFIXES = ("module.", "_orig_mod.", "backbone.")
_HEAD_PREFIXES = ("dino_head.", "ibot_head.", "dino_loss.", "ibot_patch_loss.")


def unwrap_checkpoint(obj: Mapping) -> dict[str, torch.Tensor]:
    """Reduce any supported checkpoint object to a flat state_dict with official backbone keys."""
    for key in ("teacher", "model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    flat = strip_prefixes(obj, _TRAINING_PREFIXES)
    return {k: v for k, v in flat.items() if not k.startswith(_HEAD_PREFIXES) and isinstance(v, torch.Tensor)}


def is_hf_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("embeddings.", "layer.", "model.layer.")) for k in state_dict)


def rope_periods(head_dim: int, base: float = 100.0) -> torch.Tensor:
    """DINOv3's ``rope_embed.periods`` buffer: base ** (2i / (head_dim/2)), i < head_dim/4."""
    return base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


_HF_TOP_LEVEL = {
    "embeddings.cls_token": "cls_token",
    "embeddings.register_tokens": "storage_tokens",
    "embeddings.mask_token": "mask_token",
    "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.bias": "patch_embed.proj.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_HF_BLOCK_RENAMES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.o_proj": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.up_proj": "mlp.fc1",
    "mlp.down_proj": "mlp.fc2",
}
_HF_GATED_RENAMES = {"mlp.gate_proj": "mlp.w1", "mlp.up_proj": "mlp.w2", "mlp.down_proj": "mlp.w3"}


def hf_to_official(
    state_dict: Mapping[str, torch.Tensor], num_heads: int, rope_base: float = 100.0
) -> dict[str, torch.Tensor]:
    """Map a Hugging Face ``DINOv3ViTModel`` state_dict to the official key layout (pure function).

    q/k/v projections are concatenated into ``qkv``; the k bias, absent in HF files, is zero with a
    zero ``bias_mask`` entry (as the official masked-k bias); ``rope_embed.periods`` is recomputed.
    ``local_cls_norm`` (training-only) is not produced. Unknown keys raise CheckpointError.
    """
    sd = strip_prefixes(state_dict, ("dinov3.",))
    sd = {re.sub(r"^model\.layer\.", "layer.", k): v for k, v in sd.items()}
    gated = any(".mlp.gate_proj." in k for k in sd)
    out = {dst: sd[src] for src, dst in _HF_TOP_LEVEL.items() if src in sd}
    used = {src for src in _HF_TOP_LEVEL if src in sd}
    if "mask_token" in out:
        out["mask_token"] = out["mask_token"].reshape(1, -1)  # HF (1, 1, D) -> official (1, D)
    renames = {**_HF_BLOCK_RENAMES, **(_HF_GATED_RENAMES if gated else {})}
    for key, value in sd.items():
        match = re.match(r"layer\.(\d+)\.(.+)$", key)
        if match is None:
            continue
        i, rest = match.groups()
        for hf_name, name in renames.items():
            if rest == hf_name or rest.startswith(hf_name + "."):
                out[f"blocks.{i}.{name}{rest[len(hf_name) :]}"] = value
                used.add(key)
                break
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"layer\.(\d+)\.", k))), default=-1)
    for i in range(depth):
        attn, dst = f"layer.{i}.attention.", f"blocks.{i}.attn.qkv."
        weights = [w for n in "qkv" if (w := sd.get(f"{attn}{n}_proj.weight")) is not None]
        if len(weights) != 3:
            raise CheckpointError(f"Hugging Face DINOv3 file: layer {i} lacks q/k/v projections")
        out[f"{dst}weight"] = torch.cat(weights, dim=0)
        used.update(f"{attn}{n}_proj.weight" for n in "qkv")
        biases = [sd.get(f"{attn}{n}_proj.bias") for n in "qkv"]
        if any(b is not None for b in biases):
            dim = weights[0].shape[0]
            out[f"{dst}bias"] = torch.cat(
                [b if b is not None else torch.zeros(dim, dtype=weights[0].dtype) for b in biases]
            )
            out[f"{dst}bias_mask"] = torch.cat([torch.ones(dim) if b is not None else torch.zeros(dim) for b in biases])
            used.update(f"{attn}{n}_proj.bias" for n, b in zip("qkv", biases, strict=True) if b is not None)
    leftover = sorted(set(sd) - used - {k for k in sd if k.endswith("inv_freq")})
    if leftover:
        raise CheckpointError(f"Hugging Face DINOv3 file has keys this converter does not know: {leftover[:20]}")
    if "cls_token" not in out:
        raise CheckpointError("Hugging Face DINOv3 file has no embeddings.cls_token")
    out["rope_embed.periods"] = rope_periods(out["cls_token"].shape[-1] // num_heads, rope_base)
    return out


def _hf_num_heads(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Heads are not in the weights; every released size has head_dim 64 except ViT-7B (128)."""
    dim = state_dict["embeddings.cls_token"].shape[-1]
    for cfg in DINOV3_PRESETS.values():
        if cfg.embed_dim == dim:
            return cfg.num_heads
    return dim // 64


def detect_dinov3_preset(state_dict: Mapping[str, torch.Tensor], hash_prefix: str | None = None) -> str:
    """Name the preset whose exact key set and shapes match an official-layout state_dict."""
    if "cls_token" not in state_dict:
        raise CheckpointError("not a DINOv3 ViT state_dict: no 'cls_token' key")
    dim = state_dict["cls_token"].shape[-1]
    depth = 1 + max((int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    swiglu = "blocks.0.mlp.w1.weight" in state_dict
    hidden = state_dict["blocks.0.mlp.w1.weight" if swiglu else "blocks.0.mlp.fc1.weight"].shape[0]
    untied = "local_cls_norm.weight" in state_dict
    matches = []
    for name, cfg in DINOV3_PRESETS.items():
        cfg_hidden = (
            swiglu_hidden_dim(int(cfg.embed_dim * cfg.ffn_ratio), cfg.swiglu_align)
            if cfg.ffn == "swiglu"
            else int(cfg.embed_dim * cfg.ffn_ratio)
        )
        if (cfg.embed_dim, cfg.depth, cfg.ffn == "swiglu", cfg_hidden, cfg.untie_global_and_local_cls_norm) == (
            dim,
            depth,
            swiglu,
            hidden,
            untied,
        ):
            matches.append(name)
    if not matches:
        raise CheckpointError(
            f"no DINOv3 preset has embed_dim={dim}, depth={depth}, {'SwiGLU' if swiglu else 'MLP'} width {hidden}"
            f"{', local_cls_norm' if untied else ''}; known presets: {sorted(DINOV3_PRESETS)}"
        )
    if len(matches) > 1 and hash_prefix in RELEASED_HASHES and RELEASED_HASHES[hash_prefix] in matches:
        return RELEASED_HASHES[hash_prefix]
    return matches[0]  # ViT-7B: LVD unless the hash or the caller says SAT


def dinov3_state_dict_from_file(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None, str]:
    """Read any supported DINOv3 file -> (official-layout state_dict, verified hash or None, source form)."""
    hash_prefix = verify_name_hash(path)
    raw = read_checkpoint(path)
    if is_hf_layout(raw):
        return hf_to_official(raw, _hf_num_heads(raw)), hash_prefix, "huggingface"
    form = "official" if "cls_token" in raw else "training"
    return unwrap_checkpoint(raw), hash_prefix, form


def load_dinov3(path: str | Path, preset: str | None = None) -> DinoVisionTransformer:
    """Build the matching backbone and load ``path`` strictly. Returns the model in eval mode.

    ``preset`` overrides detection (needed only for the SAT-493M ViT-7B renamed by the user, and for
    Hugging Face SAT files, whose keys equal the LVD ones).
    """
    state_dict, hash_prefix, form = dinov3_state_dict_from_file(path)
    name = preset or detect_dinov3_preset(state_dict, hash_prefix)
    if name not in DINOV3_PRESETS:
        raise ValueError(f"unknown DINOv3 preset {name!r}; valid: {sorted(DINOV3_PRESETS)}")
    config: DinoV3Config = DINOV3_PRESETS[name]
    if form == "huggingface" and config.untie_global_and_local_cls_norm:
        # Training-only LayerNorm that HF files drop; identity values, never used at inference.
        dim = config.embed_dim
        state_dict.setdefault("local_cls_norm.weight", torch.ones(dim))
        state_dict.setdefault("local_cls_norm.bias", torch.zeros(dim))
    bad_masks = [k for k, v in state_dict.items() if k.endswith("bias_mask") and not torch.isfinite(v).all()]
    if bad_masks:
        raise CheckpointError(
            f"{path}: {bad_masks[0]} holds NaN (a model saved before init_weights); "
            "re-export the backbone from a trained model"
        )
    model = build_and_load(
        lambda: DinoVisionTransformer(config), state_dict, what=f"{Path(path).name} ({form} form, preset {name})"
    )
    return model.eval()
