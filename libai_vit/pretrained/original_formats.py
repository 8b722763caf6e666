"""The families' own release formats -> timm names (what timm's `checkpoint_filter_fn` does for
them), so that `timm_format` does the rest:

- DINOv2 (`dinov2_vit{s,b,l}14[_reg4]_pretrain.pth` from facebookresearch/dinov2): timm's names but
  for `mask_token` (dropped) and, with registers, `register_tokens`, a position embedding that
  covers the class token, which timm's no_embed_class model folds into the class token;
- OpenAI CLIP and OpenCLIP image towers (`visual.*` keys of a full CLIP state dict, or OpenCLIP's
  timm-trunk models under `visual.trunk.*`): renamed by the table below; the image projection
  `visual.proj` becomes the head (no bias), dropped when num_classes differs.
"""

import re

import numpy as np

from libai_vit.pretrained.torch_pickle import PretrainedError

# substring of an OpenAI/OpenCLIP `visual.` key -> timm's, applied in order (timm's table)
_CLIP = [
    ("conv1", "patch_embed.proj"),
    ("positional_embedding", "pos_embed"),
    ("transformer.resblocks.", "blocks."),
    ("ln_pre", "norm_pre"),
    ("ln_post", "norm"),
    ("ln_", "norm"),
    ("in_proj_", "qkv."),
    ("out_proj", "proj"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
]


def detect(state):
    """The release format of a state dict: "clip", "openclip_trunk", "dinov2" or "timm"."""
    if "visual.class_embedding" in state:
        return "clip"
    if "visual.trunk.pos_embed" in state or "visual.trunk.blocks.0.norm1.weight" in state:
        return "openclip_trunk"
    if "register_tokens" in state or ("mask_token" in state and "blocks.0.ls1.gamma" in state):
        return "dinov2"
    return "timm"


def to_timm(state, path, fmt=None):
    """(timm-named state dict, the format's name); `fmt`: `detect`'s answer for the whole file
    when `state` is a part of it."""
    fmt = fmt or detect(state)
    if fmt == "clip":
        return _clip(state), "OpenAI/OpenCLIP CLIP"
    if fmt == "openclip_trunk":
        out = {
            k[len("visual.trunk.") :]: v for k, v in state.items() if k.startswith("visual.trunk.")
        }
        if "visual.head.proj.weight" in state:
            w = state["visual.head.proj.weight"]
            out.update({"head.weight": w, "head.bias": np.zeros(w.shape[0], w.dtype)})
        return out, "OpenCLIP (timm trunk)"
    if fmt == "dinov2":
        return _dinov2(state, path), "DINOv2"
    return state, None


def _clip(state):
    out = {}
    for key, value in state.items():
        if not key.startswith("visual."):
            continue  # the text tower
        key = key[len("visual.") :]
        for old, new in _CLIP:
            key = key.replace(old, new)
        if key == "proj":  # (width, embed) image projection: the head
            out["head.weight"] = value.T
            out["head.bias"] = np.zeros(value.shape[1], value.dtype)
            continue
        if key == "class_embedding":
            key, value = "cls_token", value.reshape(1, 1, -1)
        elif key == "pos_embed":
            value = value[None]
        out[key] = value
    return out


def _dinov2(state, path):
    out = {k: v for k, v in state.items() if k not in ("mask_token", "register_tokens")}
    if any(re.fullmatch(r"blocks\.\d+\.mlp\.w12\.weight", k) for k in state):
        raise PretrainedError(
            f"{path}: DINOv2 giant's packed SwiGLU (mlp.w12) is not supported here; "
            f"use ViT-S/B/L DINOv2 weights"
        )
    if (
        "register_tokens" in state
    ):  # timm's no_embed_class layout: fold the class token's position in
        out["reg_token"] = state["register_tokens"]
        out["cls_token"] = state["cls_token"] + state["pos_embed"][:, :1]
        out["pos_embed"] = state["pos_embed"][:, 1:]
    return out
