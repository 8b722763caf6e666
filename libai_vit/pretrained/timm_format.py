"""timm-named ViT state dicts (timm itself, DeiT's {"model": ...}, MAE's encoder) -> this ViT's names.

timm's Linear weights are (out, in); LiBai's are (in, out). timm's fused qkv rows are [q | k | v], each
all heads; LiBai's query_key_value columns are grouped per head, [q_h | k_h | v_h], so a tensor-parallel
column split hands each rank whole heads.
"""
import re

import numpy as np

from libai_vit.layers import pos_embed as resample
from libai_vit.pretrained.torch_pickle import PretrainedError

_BLOCK = {  # timm sub-module of blocks.i -> LiBai's
    "norm1": "input_layernorm",
    "attn.qkv": "self_attention.query_key_value",
    "attn.proj": "self_attention.dense",
    "norm2": "post_attention_layernorm",
    "mlp.fc1": "mlp.dense_h_to_4h",
    "mlp.fc2": "mlp.dense_4h_to_h",
}
_TOP = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
        "norm.bias", "fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")
_LINEAR_WEIGHTS = ("self_attention.dense.weight", "mlp.dense_h_to_4h.weight", "mlp.dense_4h_to_h.weight",
                   "head.weight")
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias)$")


def unwrap(obj, path):
    """The state dict inside a checkpoint: DeiT/MAE keep it under "model", others under "state_dict"."""
    state = obj
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, np.ndarray) for v in state.values()):
        raise PretrainedError(f"{path}: no state dict of tensors found (top-level keys: {_keys(obj)})")
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    if "dist_token" in state:
        raise PretrainedError(f"{path}: a distilled DeiT (dist_token, head_dist) does not fit this ViT, which "
                              f"has no distillation token: use the non-distilled DeiT weights")
    return state


def libai_name(key):
    """LiBai name of timm `key`, or None when this ViT has no such kind of parameter."""
    if key in _TOP:
        return key
    m = _BLOCK_KEY.fullmatch(key)
    if m and m.group(2) in _BLOCK:
        return f"blocks.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    return None


def to_libai(state, model, path, mode="bicubic", antialias=True):
    """Convert a timm state dict for `model`.

    Returns ({libai name: array}, [timm keys this ViT has no place for], [resampling notes]); the
    position and patch embeddings are resampled to the model's grid and patch size with `mode`.
    """
    heads = model.blocks[0].self_attention.num_heads if len(model.blocks) else 1
    out, unused, resized = {}, [], []
    for key, value in state.items():
        name = libai_name(key)
        if name is None or not isinstance(value, np.ndarray):
            unused.append(key)
            continue
        value = value.astype(np.float32)
        if name.endswith("query_key_value.weight"):
            c = value.shape[1]
            value = value.reshape(3, heads, -1, c).transpose(1, 0, 2, 3).reshape(-1, c).T
        elif name.endswith("query_key_value.bias"):
            value = value.reshape(3, heads, -1).transpose(1, 0, 2).reshape(-1)
        elif name.endswith(_LINEAR_WEIGHTS):
            value = value.T
        elif name == "patch_embed.proj.weight":
            value = _patch_embed(value, model, mode, antialias, resized)
        elif name == "pos_embed":
            value = _pos_embed(value, model, mode, antialias, resized, path)
        out[name] = np.ascontiguousarray(value)
    return out, unused, resized


def _patch_embed(value, model, mode, antialias, resized):
    target = tuple(model.patch_embed.proj.weight.shape)
    if value.ndim != 4:  # timm's earliest ViTs patchified by hand into a Linear
        value = value.reshape(target[0], -1, *target[2:])
    if value.shape[2:] != target[2:]:
        resized.append(f"patch_embed.proj.weight {value.shape} -> {target} ({mode}, pseudo-inverse)")
        value = resample.resample_patch_embed(value, target[2:], mode, antialias)
    return value


def _pos_embed(value, model, mode, antialias, resized, path):
    target = tuple(model.pos_embed.shape)
    prefix = model.num_prefix_tokens
    side = int(round(np.sqrt(value.shape[1] - prefix)))
    if value.shape[1] == target[1] and side * side == value.shape[1] - prefix and \
            tuple(model.patch_embed.grid_size) == (side, side):
        return value
    try:
        value = resample.resample_pos_embed(value, model.patch_embed.grid_size, prefix, mode, antialias)
    except ValueError as e:
        raise PretrainedError(f"{path}: pos_embed {value.shape}: {e}") from None
    resized.append(f"pos_embed {(side, side)} grid -> {tuple(model.patch_embed.grid_size)} ({mode})")
    return value


def _keys(obj):
    return sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
