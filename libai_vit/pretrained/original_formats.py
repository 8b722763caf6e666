"""The families' own release formats -> timm names (what timm's `checkpoint_filter_fn` does for
them), so that `timm_format` does the rest:

- DINOv2 (`dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth` from facebookresearch/dinov2): timm's names
  but for `mask_token` (dropped), ViT-g's packed SwiGLU `mlp.w12` / `mlp.w3` (timm's fc1 / fc2)
  and, with registers, `register_tokens`, a position embedding that covers the class token, which
  timm's no_embed_class model folds into the class token;
- DINOv3 (`dinov3_vit*16_pretrain_*.pth` from facebookresearch/dinov3): `storage_tokens` (timm's
  reg_token), the SwiGLU's w1 / w2 / w3 (fc1_g / fc1_x / fc2), a q/k/v bias whose k part DINOv3
  masks out (`bias_mask`), so it loads as zeros, or is dropped when the model has no q/k/v bias
  (timm's `_qkvb` names have one); `mask_token`, RoPE `periods` and the 7B's `local_cls_norm` are
  not part of the model;
- AIMv2 (apple/ml-aim's `model.safetensors`, e.g. `apple/aimv2-large-patch14-224`): the trunk
  under `trunk.`, the patch embedding and position embedding under `preprocessor.`, `norm_1` /
  `norm_2`, the SwiGLU's fc1 / fc3 (timm's fc1_g / fc1_x), `post_trunk_norm` (timm's norm); no head;
- OpenAI CLIP and OpenCLIP image towers (`visual.*` keys of a full CLIP state dict, or OpenCLIP's
  timm-trunk models under `visual.trunk.*`): renamed by the table below; the image projection
  `visual.proj` becomes the head (no bias), dropped when num_classes differs;
- Perception Encoder (facebookresearch/perception_models' `PE-Core-*.pt` under `visual.`, with the
  text tower beside it; the vision-only `PE-Lang-*` / `PE-Spatial-*` without the prefix): CLIP's
  names plus LayerScale `ls_1` / `ls_2` (timm's gamma_1 / gamma_2) and the attention pool's
  `probe`, `layernorm` and one `in_proj` of rows [q | kv] (timm's latent, norm, q and kv), as
  timm's `_convert_pe`.
- InternViT (OpenGVLab's `InternViT-*` `model.safetensors`, or an InternVL chat model's vision
  tower under `vision_model.`, whose projector `mlp1` and language model are skipped):
  `embeddings.*`, `encoder.layers.*`, LayerScale `ls1` / `ls2` (timm's ls1.gamma / ls2.gamma);
  q/k/v, norms and MLP keep timm's names; InternViT-6B's qk-norm weights span the whole width.
"""

import re

import numpy as np

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


# Perception Encoder's names beyond CLIP's -> timm's (timm's _convert_pe): LayerScale, then the
# attention pool's
_PE = [("ls_1.gamma", "gamma_1"), ("ls_2.gamma", "gamma_2")]
_PE_POOL = [
    ("attn_pool.attn", "attn_pool"),
    ("attn_pool.layernorm", "attn_pool.norm"),
    ("attn_pool.probe", "attn_pool.latent"),
]
# DINOv3 release name -> timm's (a substring, replaced), as timm's eva.checkpoint_filter_fn does
_DINOV3 = [
    ("storage_tokens", "reg_token"),
    ("mlp.w1.", "mlp.fc1_g."),
    ("mlp.w2.", "mlp.fc1_x."),
    ("mlp.w3.", "mlp.fc2."),
]
# DINOv3 release entries that are no part of the model (pre-training only, or recomputed)
_DINOV3_DROPPED = re.compile(r"mask_token|.*\.periods|.*\.bias_mask|local_cls_norm\..*")
# AIMv2 release name -> timm's (a substring, replaced in order), timm's _convert_aimv2
_AIMV2 = [
    ("norm_1", "norm1"),
    ("norm_2", "norm2"),
    ("preprocessor.patchifier.", "patch_embed."),
    ("preprocessor.pos_embed", "pos_embed"),
    ("trunk.", ""),
    ("post_trunk_norm.", "norm."),
    ("mlp.fc1", "mlp.fc1_g"),
    ("mlp.fc3", "mlp.fc1_x"),
]
# InternViT release name -> timm's (a substring, replaced in order)
_INTERNVIT = [
    ("embeddings.class_embedding", "cls_token"),
    ("embeddings.position_embedding", "pos_embed"),
    ("embeddings.patch_embedding.", "patch_embed.proj."),
    ("encoder.layers.", "blocks."),
]
_INTERNVIT_LAYER_SCALE = re.compile(r"(blocks\.\d+\.ls[12])$")
# DINOv2 giant's packed SwiGLU -> timm's SwiGLUPacked names
_DINOV2_MLP = [("mlp.w12.", "mlp.fc1."), ("mlp.w3.", "mlp.fc2.")]


# the prefix of the image tower's entries in a format whose file holds more than the tower
TOWER_PREFIX = {
    "clip": "visual.",
    "pe": "visual.",
    "openclip_trunk": "visual.",
    "internvit": "vision_model.",
}


def detect(state):
    """The release format of a state dict: "clip", "pe" (PE under visual.), "pe_tower" (PE's
    vision-only files), "openclip_trunk", "dinov3", "dinov2", "aimv2", "internvit" (InternVL's
    `vision_model.` tower), "internvit_tower" (InternViT's own files) or "timm"."""
    if "embeddings.patch_embedding.weight" in state:
        return "internvit_tower"
    if "vision_model.embeddings.patch_embedding.weight" in state:
        return "internvit"
    if "preprocessor.patchifier.proj.weight" in state:
        return "aimv2"
    if "conv1.weight" in state:
        return "pe_tower"
    if "visual.conv1.weight" in state:  # PE: LayerScale, an attention pool or no class token
        pe = "visual.class_embedding" not in state
        pe = pe or any(".ls_1." in k or k.startswith("visual.attn_pool.") for k in state)
        return "pe" if pe else "clip"
    if "visual.trunk.pos_embed" in state or "visual.trunk.blocks.0.norm1.weight" in state:
        return "openclip_trunk"
    if "storage_tokens" in state:  # before DINOv2's test: DINOv3 has mask_token and ls1 too
        return "dinov3"
    if "register_tokens" in state or ("mask_token" in state and "blocks.0.ls1.gamma" in state):
        return "dinov2"
    return "timm"


def to_timm(state, path, fmt=None, model=None):
    """(timm-named state dict, the format's name); `fmt`: `detect`'s answer for the whole file
    when `state` is a part of it; `model` (the one loading) tells whether a DINOv3 q/k/v bias has
    a place."""
    fmt = fmt or detect(state)
    if fmt == "clip":
        return _clip(state), "OpenAI/OpenCLIP CLIP"
    if fmt in ("pe", "pe_tower"):
        return _clip(state, "visual." if fmt == "pe" else "", pe=True), "Perception Encoder"
    if fmt == "openclip_trunk":
        out = {
            k[len("visual.trunk.") :]: v for k, v in state.items() if k.startswith("visual.trunk.")
        }
        if "visual.head.proj.weight" in state:
            w = state["visual.head.proj.weight"]
            out.update({"head.weight": w, "head.bias": np.zeros(w.shape[0], w.dtype)})
        return out, "OpenCLIP (timm trunk)"
    if fmt == "dinov3":
        return _dinov3(state, model), "DINOv3"
    if fmt == "dinov2":
        return _dinov2(state), "DINOv2"
    if fmt in ("internvit", "internvit_tower"):
        return _internvit(state, "vision_model." if fmt == "internvit" else ""), "InternViT"
    if fmt == "aimv2":
        return {_renamed(k, _AIMV2): v for k, v in state.items()}, "AIMv2"
    return state, None


def _clip(state, prefix="visual.", pe=False):
    """CLIP's (or with `pe`, Perception Encoder's) image tower under `prefix` -> timm's names."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue  # the text tower
        key = key[len(prefix) :]
        for old, new in _CLIP + (_PE if pe else []):
            key = key.replace(old, new)
        if pe and key.startswith("attn_pool."):
            key = _renamed(key, _PE_POOL)
            if key.startswith("attn_pool.qkv."):  # rows [q | k v]
                kind = key.rsplit(".", 1)[1]
                q, kv = np.split(value, [value.shape[0] // 3])
                out[f"attn_pool.q.{kind}"], out[f"attn_pool.kv.{kind}"] = q, kv
                continue
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


def _renamed(key, table):
    for old, new in table:
        key = key.replace(old, new)
    return key


def _dinov3(state, model):
    has_qkv_bias = (
        model is None
        or not len(model.blocks)
        or model.blocks[0].self_attention.query_key_value.bias is not None
    )
    out = {}
    for key, value in state.items():
        if _DINOV3_DROPPED.fullmatch(key):
            continue
        if key.endswith(".attn.qkv.bias"):
            if has_qkv_bias:  # the k part is masked out in DINOv3's forward: zeros here
                q, _, v = np.split(value, 3)
                out[key] = np.concatenate([q, np.zeros_like(q), v])
            continue
        out[_renamed(key, _DINOV3)] = value
    return out


def _dinov2(state):
    out = {
        _renamed(k, _DINOV2_MLP): v
        for k, v in state.items()
        if k not in ("mask_token", "register_tokens")
    }
    # timm's no_embed_class layout: fold the class token's position in
    if "register_tokens" in state:
        out["reg_token"] = state["register_tokens"]
        out["cls_token"] = state["cls_token"] + state["pos_embed"][:, :1]
        out["pos_embed"] = state["pos_embed"][:, 1:]
    return out


def _internvit(state, prefix):
    """InternViT's names under `prefix` -> timm's; entries outside it (InternVL's projector and
    language model) are skipped."""
    out = {}
    for key, value in state.items():
        if key.startswith(prefix):
            key = _INTERNVIT_LAYER_SCALE.sub(r"\1.gamma", _renamed(key[len(prefix) :], _INTERNVIT))
            out[key] = value
    return out
