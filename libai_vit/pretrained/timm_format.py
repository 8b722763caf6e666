"""timm-named ViT state dicts (timm itself, DeiT's {"model": ...}, MAE's encoder, and every format
that `original_formats` renames to timm's) -> this ViT's names.

timm's Linear weights are (out, in); LiBai's are (in, out). timm's fused qkv rows are [q | k | v],
each all heads; LiBai's query_key_value columns are grouped per head, [q_h | k_h | v_h], so a
tensor-parallel column split hands each rank whole heads (the attention pool's kv likewise, [k_h |
v_h]). EVA keeps q, k and v as three projections with no k bias: they are stacked into the one
projection, k's bias zero.
"""

import re

import numpy as np

from libai_vit.layers import pos_embed as resample
from libai_vit.layers.transformer import ParallelScalingBlock, attention_modules
from libai_vit.pretrained.torch_pickle import LazyArray, PretrainedError

_BLOCK = {  # timm sub-module of blocks.i -> LiBai's
    "norm1": "input_layernorm",
    "attn.qkv": "self_attention.query_key_value",
    "attn.q_norm": "self_attention.q_norm",
    "attn.k_norm": "self_attention.k_norm",
    "attn.norm": "self_attention.norm",
    "attn.proj": "self_attention.dense",
    "ls1": "ls1",
    "norm2": "post_attention_layernorm",
    "mlp.fc1": "mlp.dense_h_to_4h",
    "mlp.fc1_x": "mlp.dense_h_to_4h",  # SwiGLU (EVA-02): the value branch
    "mlp.fc1_g": "mlp.dense_h_to_4h_gate",  # and the gate
    "mlp.norm": "mlp.norm",
    "mlp.fc2": "mlp.dense_4h_to_h",
    "ls2": "ls2",
}
_TOP = {  # timm name -> LiBai's, outside the blocks
    **{
        k: k
        for k in (
            "cls_token",
            "reg_token",
            "pos_embed",
            "patch_embed.proj.weight",
            "patch_embed.proj.bias",
            "patch_embed.norm.weight",
            "patch_embed.norm.bias",
            "norm_pre.weight",
            "norm_pre.bias",
            "norm.weight",
            "norm.bias",
            "fc_norm.weight",
            "fc_norm.bias",
            "head.weight",
            "head.bias",
            "attn_pool.latent",
        )
    },
    **{
        f"attn_pool.{m}.{p}": f"attn_pool.{m}.{p}"
        for m in ("q", "kv", "proj", "norm")
        for p in ("weight", "bias")
    },
    **{
        f"attn_pool.mlp.fc{i}.{p}": f"attn_pool.mlp.{n}.{p}"
        for i, n in ((1, "dense_h_to_4h"), (2, "dense_4h_to_h"))
        for p in ("weight", "bias")
    },
}
# timm's ParallelScalingBlock (ViT-22B) sub-module of blocks.i -> the plain block's timm name; its
# fused `in_proj` rows [fc1 | q | k | v] are split into mlp.fc1 and attn.qkv (from_parallel_scaling)
_PARALLEL_SCALING = {
    "in_norm": "norm1",
    "q_norm": "attn.q_norm",
    "k_norm": "attn.k_norm",
    "attn_out_proj": "attn.proj",
    "mlp_out_proj": "mlp.fc2",
    "ls": "ls1",
}
# timm's ParallelThingsBlock (`*_18x2_*`): branch i of blocks.N.attns / .ffns holds one half of a
# plain block, named as in it but for its norm and LayerScale
_PARALLEL_THINGS = {"attns": {"norm": "norm1", "ls": "ls1"}, "ffns": {"norm": "norm2", "ls": "ls2"}}
_TRANSPOSED = re.compile(
    r".*(dense|dense_h_to_4h(_gate)?|dense_4h_to_h|head|attn_pool\.(q|proj))\.weight$"
)
# blocks.N (or a parallel block's branch, blocks.N.attns.i / blocks.N.ffns.i), sub-module, tensor
_BLOCK_KEY = re.compile(r"blocks\.(\d+(?:\.(?:attns|ffns)\.\d+)?)\.(.+)\.(weight|bias|gamma)$")
_BRANCH_KEY = re.compile(r"(blocks\.\d+\.(attns|ffns)\.\d+\.)(norm|ls|norm[12]|ls[12])(\..+)")


def unwrap(obj, path):
    """The state dict in a checkpoint: DeiT/MAE keep it under "model", others under "state_dict"."""
    state = obj
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    arrays = (np.ndarray, LazyArray)
    if not isinstance(state, dict) or not any(isinstance(v, arrays) for v in state.values()):
        raise PretrainedError(
            f"{path}: no state dict of tensors found (top-level keys: {_keys(obj)})"
        )
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    if "dist_token" in state:
        raise PretrainedError(
            f"{path}: a distilled DeiT (dist_token, head_dist) does not fit this ViT, which "
            f"has no distillation token: use the non-distilled DeiT weights"
        )
    return state


def libai_name(key):
    """LiBai name of timm `key`, or None when this ViT has no such kind of parameter."""
    if key in _TOP:
        return _TOP[key]
    m = _BLOCK_KEY.fullmatch(key)
    if m and m.group(2) in _BLOCK:
        return f"blocks.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    return None


def from_eva_layout(state, packed_glu=False):
    """EVA's attn.q_proj/k_proj/v_proj (or attn.qkv with q_bias, v_bias) -> one attn.qkv, k bias
    zero; DeiT III's and EVA's block-level gamma_1/gamma_2 -> ls1/ls2.gamma; with `packed_glu` (the
    model has a SwiGLU and the checkpoint timm's GluMlp, EVA-02 Ti/S), mlp.fc1's rows [gate | value]
    -> mlp.fc1_g and mlp.fc1_x."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"(blocks\.\d+\.)(gamma_([12]))", key)
        g = re.fullmatch(r"(blocks\.\d+\.mlp\.)fc1\.(weight|bias)", key) if packed_glu else None
        if m:
            out[f"{m.group(1)}ls{m.group(3)}.gamma"] = value
        elif g:
            gate, val = np.split(value, 2, axis=0)
            out[f"{g.group(1)}fc1_g.{g.group(2)}"], out[f"{g.group(1)}fc1_x.{g.group(2)}"] = (
                gate,
                val,
            )
        elif not re.search(r"\.attn\.([qkv]_proj\.(weight|bias)|[qv]_bias)$", key):
            out[key] = value
    for key in state:
        m = re.fullmatch(r"(blocks\.\d+\.attn\.)q_proj\.weight", key)
        if m:
            t = m.group(1)
            out[t + "qkv.weight"] = np.concatenate([state[t + f"{n}_proj.weight"] for n in "qkv"])
        m = re.fullmatch(r"(blocks\.\d+\.attn\.)(q_proj\.bias|q_bias)", key)
        if m:
            t, sep = m.group(1), "_proj.bias" if m.group(2) == "q_proj.bias" else "_bias"
            q, v = state[t + "q" + sep], state[t + "v" + sep]
            out[t + "qkv.bias"] = np.concatenate([q, np.zeros_like(q), v])
    return out


def from_parallel_scaling(state):
    """timm's ParallelScalingBlock names -> its plain Block's (see _PARALLEL_SCALING)."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"(blocks\.\d+\.)([a-z_]+)\.(weight|bias|gamma)", key)
        f = re.fullmatch(r"(blocks\.\d+\.)(in_proj\.(weight|bias)|mlp_bias)", key)
        if m and m.group(2) in _PARALLEL_SCALING:
            out[f"{m.group(1)}{_PARALLEL_SCALING[m.group(2)]}.{m.group(3)}"] = value
        elif f and f.group(2) == "mlp_bias":
            out[f.group(1) + "mlp.fc1.bias"] = value
        elif f:  # rows [fc1 (hidden) | q | k | v (width each)]
            width = state[f.group(1) + "in_proj.weight"].shape[1]
            hidden = value.shape[0] - 3 * width
            p = f.group(3)
            out[f"{f.group(1)}mlp.fc1.{p}"], out[f"{f.group(1)}attn.qkv.{p}"] = np.split(
                value, [hidden]
            )
        else:
            out[key] = value
    return out


def parallel_things_names(state, inverse=False):
    """timm's ParallelThingsBlock branch names -> a plain block's (_PARALLEL_THINGS), or back."""
    out = {}
    for key, value in state.items():
        m = _BRANCH_KEY.fullmatch(key)
        if m:
            table = _PARALLEL_THINGS[m.group(2)]
            table = {v: k for k, v in table.items()} if inverse else table
            key = m.group(1) + table.get(m.group(3), m.group(3)) + m.group(4)
        out[key] = value
    return out


def _per_head(value, groups, heads):
    """Rows [a (all heads) | b (all heads) ...] -> columns [a_h | b_h ...] per head, (in, out)."""
    if value.ndim == 1:
        return value.reshape(groups, heads, -1).transpose(1, 0, 2).reshape(-1)
    c = value.shape[1]
    return value.reshape(groups, heads, -1, c).transpose(1, 0, 2, 3).reshape(-1, c).T


def to_libai(state, model, path, mode="bicubic", antialias=True):
    """Convert a timm state dict for `model`.

    Returns ({libai name: array}, [timm keys this ViT has no place for], [resampling notes]); the
    position and patch embeddings are resampled to the model's grid and patch size with `mode`.
    """
    heads = attention_modules(model.blocks[0])[0].num_heads if len(model.blocks) else 1
    pool_heads = (
        model.attn_pool.num_heads if getattr(model, "attn_pool", None) is not None else heads
    )
    out, unused, resized = {}, [], []
    packed_glu = model.mlp_layer in ("swiglu", "swiglu_packed")
    if any(k.endswith(".in_proj.weight") for k in state):
        state = from_parallel_scaling(state)
    state = parallel_things_names(state)
    for key, value in from_eva_layout(state, packed_glu).items():
        name = libai_name(key)
        if name is None or not isinstance(value, np.ndarray):
            unused.append(key)
            continue
        value = value.astype(np.float32)
        if name.endswith("query_key_value.weight") or name.endswith("query_key_value.bias"):
            value = _per_head(value, 3, heads)
        elif name.startswith("attn_pool.kv."):
            value = _per_head(value, 2, pool_heads)
        elif _TRANSPOSED.fullmatch(name):
            value = value.T
        elif name == "patch_embed.proj.weight":
            value = _patch_embed(value, model, mode, antialias, resized)
        elif name == "pos_embed":
            value = _pos_embed(value, model, mode, antialias, resized, path)
        out[name] = np.ascontiguousarray(value)
    return out, unused, resized


def _per_head_inverse(value, groups, heads):
    """LiBai's (in, out) columns [a_h | b_h ...] per head -> timm's rows [a (all heads) | b ...]."""
    if value.ndim == 1:
        return value.reshape(heads, groups, -1).transpose(1, 0, 2).reshape(-1)
    c = value.shape[0]
    return value.T.reshape(heads, groups, -1, c).transpose(1, 0, 2, 3).reshape(-1, c)


def from_libai(arrays, model):
    """This ViT's {name: array} -> timm's VisionTransformer names and layouts (the inverse of
    `to_libai`), e.g. to hand a model trained here to timm."""
    if len(model.blocks) and isinstance(model.blocks[0], ParallelScalingBlock):
        raise PretrainedError(
            "export to timm's layout covers its plain blocks; ParallelScalingBlock models "
            "(*_xp_*) are not exported"
        )
    if model.rope is not None:
        raise PretrainedError(
            "export to timm's layout covers timm's VisionTransformer (ViT, DeiT III, DINOv2, "
            "CLIP, SigLIP); RoPE models (EVA-02, DINOv3, *_rope_*) are timm's Eva and are not "
            "exported"
        )
    names = {v: k for k, v in _TOP.items()}
    gated = model.mlp_layer in ("swiglu", "swiglu_packed")
    block_names = {v: k for k, v in _BLOCK.items() if k not in ("mlp.fc1", "mlp.fc1_x")}
    # timm's SwiGLU keeps the value branch as fc1_x beside fc1_g; a plain Mlp's is fc1
    block_names["mlp.dense_h_to_4h"] = "mlp.fc1_x" if gated else "mlp.fc1"
    heads = attention_modules(model.blocks[0])[0].num_heads if len(model.blocks) else 1
    out = {}
    for name, value in arrays.items():
        m = _BLOCK_KEY.fullmatch(name)
        key = f"blocks.{m.group(1)}.{block_names[m.group(2)]}.{m.group(3)}" if m else names[name]
        if name.endswith(("query_key_value.weight", "query_key_value.bias")):
            value = _per_head_inverse(value, 3, heads)
        elif name.startswith("attn_pool.kv."):
            value = _per_head_inverse(value, 2, model.attn_pool.num_heads)
        elif _TRANSPOSED.fullmatch(name):
            value = value.T
        out[key] = np.ascontiguousarray(value)
    if model.mlp_layer == "swiglu_packed":  # SwiGLUPacked (DINOv2-g): one fc1, rows [gate | value]
        for key in [k for k in out if ".mlp.fc1_g." in k]:
            value_key = key.replace(".fc1_g.", ".fc1_x.")
            packed = np.concatenate([out.pop(key), out.pop(value_key)])
            out[key.replace(".fc1_g.", ".fc1.")] = packed
    return parallel_things_names(out, inverse=True)


def _patch_embed(value, model, mode, antialias, resized):
    target = tuple(model.patch_embed.proj.weight.shape)
    if value.ndim != 4:  # timm's earliest ViTs patchified by hand into a Linear
        value = value.reshape(target[0], -1, *target[2:])
    if value.shape[2:] != target[2:]:
        resized.append(
            f"patch_embed.proj.weight {value.shape} -> {target} ({mode}, pseudo-inverse)"
        )
        value = resample.resample_patch_embed(value, target[2:], mode, antialias)
    return value


def _pos_embed(value, model, mode, antialias, resized, path):
    if model.pos_embed is None:
        return value  # reported as unused by the loader: the model has no place for it
    target = tuple(model.pos_embed.shape)
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    side = int(round(np.sqrt(value.shape[1] - prefix)))
    if (
        value.shape[1] == target[1]
        and side * side == value.shape[1] - prefix
        and tuple(model.patch_embed.grid_size) == (side, side)
    ):
        return value
    try:
        value = resample.resample_pos_embed(
            value, model.patch_embed.grid_size, prefix, mode, antialias
        )
    except ValueError as e:
        raise PretrainedError(f"{path}: pos_embed {value.shape}: {e}") from None
    resized.append(
        f"pos_embed {(side, side)} grid -> {tuple(model.patch_embed.grid_size)} ({mode})"
    )
    return value


def _keys(obj):
    return sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
