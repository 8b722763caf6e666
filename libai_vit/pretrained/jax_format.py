"""Official JAX ViT .npz (google-research/vision_transformer naming, as timm's `_load_weights` reads
it) -> timm names, so `timm_format` does the rest.

JAX stores Dense kernels (in, out), convolutions HWIO, attention kernels per head: query/key/value
(C, heads, head_dim), out (heads, head_dim, C).
"""

import numpy as np

from libai_vit.pretrained.torch_pickle import PretrainedError

# timm loads JAX weights with bilinear, non-antialiased resampling (its _load_weights)
RESAMPLE = dict(mode="bilinear", antialias=False)
_PREFIXES = ("", "opt/target/")  # bare, or the optimizer-wrapped trees of the original release


def to_timm(w, path):
    prefix = next((p for p in _PREFIXES if f"{p}embedding/kernel" in w), None)
    if prefix is None:
        hint = (
            " (a big_vision checkpoint: not supported)"
            if any(k.startswith("params/") for k in w)
            else ""
        )
        raise PretrainedError(
            f"{path}: no 'embedding/kernel' entry, not an official JAX ViT .npz{hint}"
        )
    used = set()

    def take(key):
        used.add(prefix + key)
        return np.asarray(w[prefix + key], dtype=np.float32)

    state = {
        "patch_embed.proj.weight": take("embedding/kernel").transpose(3, 2, 0, 1),  # HWIO -> OIHW
        "patch_embed.proj.bias": take("embedding/bias"),
        "pos_embed": take("Transformer/posembed_input/pos_embedding"),
    }
    if f"{prefix}cls" in w:
        state["cls_token"] = take("cls")
    if f"{prefix}Transformer/encoder_norm/scale" in w:
        state["norm.weight"] = take("Transformer/encoder_norm/scale")
        state["norm.bias"] = take("Transformer/encoder_norm/bias")
    if f"{prefix}head/kernel" in w:
        state["head.weight"] = take("head/kernel").T
        state["head.bias"] = take("head/bias")
    i = 0
    while f"{prefix}Transformer/encoderblock_{i}/LayerNorm_0/scale" in w:
        j, t = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        mha = j + "MultiHeadDotProductAttention_1/"
        state[t + "attn.qkv.weight"] = np.concatenate(
            [
                take(mha + f"{n}/kernel").reshape(state["patch_embed.proj.bias"].shape[0], -1).T
                for n in ("query", "key", "value")
            ]
        )
        state[t + "attn.qkv.bias"] = np.concatenate(
            [take(mha + f"{n}/bias").reshape(-1) for n in ("query", "key", "value")]
        )
        out = take(mha + "out/kernel")  # (heads, head_dim, C)
        state[t + "attn.proj.weight"] = out.reshape(-1, out.shape[-1]).T
        state[t + "attn.proj.bias"] = take(mha + "out/bias")
        for jn, tn in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            state[t + f"{tn}.weight"] = take(j + f"{jn}/scale")
            state[t + f"{tn}.bias"] = take(j + f"{jn}/bias")
        for r in range(2):
            state[t + f"mlp.fc{r + 1}.weight"] = take(j + f"MlpBlock_3/Dense_{r}/kernel").T
            state[t + f"mlp.fc{r + 1}.bias"] = take(j + f"MlpBlock_3/Dense_{r}/bias")
        i += 1
    # entries this ViT has no place for (pre_logits, ...) are kept under their JAX names
    state.update({k: np.asarray(w[k]) for k in w if k not in used})
    return state
