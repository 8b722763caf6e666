"""This project's own checkpoints (a LiBai Checkpointer directory, DIR/model = flow.save of the
state dict) as pretrained weights: the names are already this ViT's; only the embeddings may need
resampling to a new image or patch size."""

import os

import numpy as np
import oneflow as flow

from libai_vit.pretrained import timm_format
from libai_vit.pretrained.torch_pickle import PretrainedError


def is_checkpoint_dir(path):
    return os.path.isdir(os.path.join(path, "model"))


def read(path):
    try:
        state = flow.load(os.path.join(path, "model"))
    except Exception as e:
        raise PretrainedError(
            f"{path}: unreadable LiBai checkpoint ({type(e).__name__}: {e})"
        ) from None
    return {k: v.numpy() for k, v in state.items()}


def to_libai(state, model, path, mode="bicubic", antialias=True):
    """Like timm_format.to_libai for a state dict already in this ViT's names."""
    out, resized = {}, []
    for name, value in state.items():
        value = value.astype(np.float32)
        if name == "patch_embed.proj.weight":
            value = timm_format._patch_embed(value, model, mode, antialias, resized)
        elif name == "pos_embed":
            value = timm_format._pos_embed(value, model, mode, antialias, resized, path)
        out[name] = np.ascontiguousarray(value)
    return out, [], resized
