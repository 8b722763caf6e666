"""This project's own checkpoints (a LiBai Checkpointer directory, DIR/model: the state dict
sharded, or whole as flow.save writes it) as pretrained weights: the names are already this ViT's;
only the embeddings may need resampling to a new image or patch size."""

import os

import numpy as np
import oneflow as flow

from libai_vit.pretrained import sharded_format, timm_format
from libai_vit.pretrained.torch_pickle import PretrainedError


def is_checkpoint_dir(path):
    return os.path.isdir(os.path.join(path, "model"))


def read(path):
    return read_entry(os.path.join(path, "model"))


def read_entry(entry):
    """A checkpoint entry holding a state dict (`model`, `model_ema`), sharded or whole, as
    {name: whole numpy array} in this process."""
    try:
        if sharded_format.is_sharded(entry):
            return sharded_format.read_arrays(entry)
        state = flow.load(entry)
    except Exception as e:
        raise PretrainedError(
            f"{os.path.dirname(entry)}: unreadable LiBai checkpoint ({type(e).__name__}: {e})"
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
