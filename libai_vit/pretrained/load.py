"""Detect a checkpoint's format, convert it, and copy it into a VisionTransformer on any layout."""

import logging
import os
import re
import struct
import zipfile
from dataclasses import dataclass, field
from functools import partial
from typing import List

import numpy as np
import oneflow as flow

from libai_vit import parallel
from libai_vit.pretrained import (
    jax_format,
    libai_format,
    original_formats,
    safetensors_file,
    timm_format,
    torch_pickle,
)
from libai_vit.pretrained.torch_pickle import LazyArray, PretrainedError

logger = logging.getLogger(__name__)

# the task-specific end of a ViT: a new num_classes or pooling legitimately leaves these unloaded
_ADAPTED = ("head.", "fc_norm.", "norm.")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
# tensors whose shape holds embed_dim (the first as its dim 0, the others as their last)
_WIDTH_TENSORS = ("patch_embed.proj.weight", "cls_token", "pos_embed")


@dataclass
class LoadReport:
    """What `load_pretrained` did. Names are this ViT's; checkpoint entries it has no kind of
    parameter for (decoder, mask_token, pre_logits...) keep the checkpoint's names."""

    path: str
    format: str
    loaded: List[str] = field(default_factory=list)
    # model parameters left at their initialisation
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)  # checkpoint entries not used
    dropped: List[str] = field(default_factory=list)  # checkpoint head not matching num_classes
    resized: List[str] = field(default_factory=list)

    def __str__(self):
        lines = [f"loaded {len(self.loaded)} tensors from {self.path} ({self.format})"]
        for what in ("resized", "dropped", "missing", "unexpected"):
            if getattr(self, what):
                lines.append(f"  {what}: {', '.join(getattr(self, what))}")
        return "\n".join(lines)


def read(path, trust=False):
    """(format, content) of a checkpoint file: "torch" (a pickled object), "safetensors" (a file,
    or the `*.safetensors.index.json` of a checkpoint in shards) or "npz" (dicts of arrays), or
    "libai" (this project's checkpoint directory). The tensors of the files
    are LazyArrays, read when `np.asarray` asks for them; the rest of the file is checked here.
    Any failure is a one-line PretrainedError naming the file."""
    if libai_format.is_checkpoint_dir(path):
        return "libai", libai_format.read(path)
    if path.endswith(".safetensors.index.json") and os.path.isfile(path):
        return "safetensors", safetensors_file.read_sharded(path)
    if not os.path.isfile(path):
        raise PretrainedError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except Exception as e:
            raise PretrainedError(f"{path}: corrupt zip archive ({e})") from None
        if any(n.endswith("/data.pkl") for n in names):
            return "torch", torch_pickle.load(path, trust, lazy=True)
        if names and all(n.endswith(".npy") for n in names):
            try:
                with np.load(path, allow_pickle=False) as npz:
                    shapes = {k: npz[k].shape for k in npz.files}
            except Exception as e:
                raise PretrainedError(f"{path}: corrupt .npz ({type(e).__name__}: {e})") from None
            return "npz", {k: LazyArray(v, partial(_npz_entry, path, k)) for k, v in shapes.items()}
        raise PretrainedError(
            f"{path}: a zip archive that is neither a torch checkpoint nor an .npz"
        )
    with open(path, "rb") as f:
        head = f.read(9)
    size = os.path.getsize(path)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size:
        return "safetensors", safetensors_file.read(path)
    raise PretrainedError(
        f"{path}: not a safetensors, torch (.pth/.bin, zip format) or JAX .npz file"
    )


def _npz_entry(path, key):
    with np.load(path, allow_pickle=False) as npz:
        return npz[key]


# a block's entries in every format read here: timm/DeiT/MAE/DINOv2 `blocks.N.`, OpenAI/OpenCLIP
# `visual.transformer.resblocks.N.`, OpenCLIP trunks `visual.trunk.blocks.N.`
_BLOCK_OF_KEY = re.compile(r"(?:^|\.)(?:blocks|resblocks|layers)\.(\d+)\.")


def _vit_size(state):
    """(embed_dim, the tensor it was read from, depth) of a ViT state dict in timm's or this ViT's
    names; None where unknown."""
    width = tensor = None
    for key, value in state.items():
        shape = getattr(value, "shape", ())
        if key.endswith(_WIDTH_TENSORS[0]) and len(shape):
            width, tensor = shape[0], key
        elif key.endswith(_WIDTH_TENSORS[1:]) and len(shape) and width is None:
            width, tensor = shape[-1], key
    blocks = {int(m.group(1)) for m in map(_BLOCK.search, state) if m}
    return width, tensor, (max(blocks) + 1 if blocks else None)


def _size_mismatch(path, state, model, detail):
    """The one line for a checkpoint of another size: which option differs, and the tensor that
    shows it (its shape in the file and in the model)."""
    width, tensor, depth = _vit_size(state)
    params = dict(model.named_parameters())
    differs = []
    if width is not None and width != getattr(model, "embed_dim", width):
        mine = params.get(next(n for n in _WIDTH_TENSORS if tensor.endswith(n)))
        shapes = f"{tensor} is {tuple(state[tensor].shape)}" + (
            f", the model's {tuple(mine.shape)}" if mine is not None else ""
        )
        differs.append(f"embed_dim={width} (the model has {model.embed_dim}; {shapes})")
    if depth is not None and depth != getattr(model, "depth", depth):
        differs.append(f"depth={depth} (the model has {model.depth})")
    if not differs:
        return f"{path}: tensors do not fit a ViT ({detail})"
    return (
        f"{path}: does not fit the model, the checkpoint is a ViT of another size: "
        f"{'; '.join(differs)}. Create the model "
        f"with those values (num_heads must divide embed_dim) [{detail}]"
    )


def convert(path, model, trust=False, holds_block=None):
    """The checkpoint at `path` for `model`, one group of entries at a time: the entries outside
    the blocks first, then each block's. Yields (format, {this ViT's name: array}, unused entries,
    resampling notes) per group. `holds_block(i)` False skips block i of the model unread (a
    pipeline stage without it); a block the model lacks is always converted (and so reported)."""
    fmt, content = read(path, trust)
    state = content if isinstance(content, dict) else {}
    if fmt == "libai":
        arrays, unused, resized = libai_format.to_libai(content, model, path)
        yield fmt, arrays, unused, resized
        return
    try:
        if fmt == "npz":
            state, release, resample = (
                jax_format.to_timm(content, path),
                "timm",
                jax_format.RESAMPLE,
            )
        else:
            state, resample = timm_format.unwrap(content, path), {}
            release = original_formats.detect(state)
            # the image tower only: a CLIP's text tower or an InternVL's language model stays unread
            tower = original_formats.TOWER_PREFIX.get(release, "")
            state = {k: v for k, v in state.items() if k.startswith(tower)}
        groups = {}
        for key in state:
            m = _BLOCK_OF_KEY.search(key)
            groups.setdefault(int(m.group(1)) if m else None, []).append(key)
        for block in sorted(groups, key=lambda b: -1 if b is None else b):
            if block is not None and block < model.depth and holds_block and not holds_block(block):
                continue
            part = {
                k: np.asarray(state[k]) if isinstance(state[k], LazyArray) else state[k]
                for k in groups[block]
            }
            part, name = original_formats.to_timm(part, path, release, model)
            arrays, unused, resized = timm_format.to_libai(part, model, path, **resample)
            yield (f"{fmt}, {name} format" if name else fmt), arrays, unused, resized
    except KeyError as e:
        raise PretrainedError(f"{path}: incomplete {fmt} checkpoint, no entry {e}") from None
    except (ValueError, IndexError) as e:
        if isinstance(e, PretrainedError):
            raise
        raise PretrainedError(_size_mismatch(path, state, model, e)) from None


@flow.no_grad()
def load_pretrained(model, path, trust=False, strict=True):
    """Load a timm (ViT, DeiT, DeiT III, DINOv2, CLIP, SigLIP, EVA-02), DeiT / MAE / DINOv2 / CLIP
    release (.safetensors, .pth, .bin) or official JAX (.npz) ViT checkpoint into `model`, whatever
    its parallel layout. Each process reads only the blocks of its pipeline stage, one block at a
    time, and keeps only its own shards of them.

    The position embedding is resampled to the model's grid, the patch embedding to its patch size,
    and a head whose num_classes differs is dropped (the model's own head initialisation stays), as
    timm does. `trust=True` lets a pickle run arbitrary code (needed for checkpoints holding e.g. an
    argparse Namespace). `strict`: refuse a checkpoint that leaves body parameters unloaded or has
    blocks the model lacks (the head, fc_norm and norm may always differ). Returns a LoadReport,
    also logged.
    """
    report = LoadReport(path, "")
    params = dict(model.named_parameters())
    unexpected_names, seen = [], {}  # seen: every converted entry's shape, for the size line
    for fmt, arrays, unused, resized in convert(path, model, trust, parallel.holds_layer):
        report.format = fmt
        report.unexpected += unused
        report.resized += resized
        for name, value in arrays.items():
            seen[name] = np.broadcast_to(np.float32(0), value.shape)
            param = params.get(name)
            if name.startswith("head.") and (param is None or tuple(param.shape) != value.shape):
                report.dropped.append(name)
            elif param is None:
                report.unexpected.append(name)
                unexpected_names.append(name)
            elif tuple(param.shape) != value.shape:
                shapes = f"{name} has shape {value.shape}, the model expects {tuple(param.shape)}"
                line = _size_mismatch(path, {**seen, **arrays}, model, shapes)
                if "another size" not in line:
                    line = f"{path}: {shapes} (different mlp_ratio / patch size?)"
                raise PretrainedError(line)
            else:
                parallel.write_local(param, value.__getitem__)
                report.loaded.append(name)
        del arrays  # one group's arrays at a time
    arrays = seen
    # the parameters of this process's stages (the other stages' processes report theirs)
    report.missing = [
        n for n, p in params.items() if n not in report.loaded and parallel.local_region(p)
    ]
    if strict:
        unfit = [n for n in report.missing if not n.startswith(_ADAPTED)]
        unfit += [n for n in unexpected_names if not n.startswith(_ADAPTED)]
        if unfit:
            listed = f"{', '.join(unfit[:6])}{' ...' if len(unfit) > 6 else ''}"
            line = _size_mismatch(path, arrays, model, f"unfit: {listed}")
            if "another size" not in line:
                line = (
                    f"{path}: does not fit the model (depth or class token differ?): {listed} "
                    f"(strict=False loads what fits)"
                )
            raise PretrainedError(line)
    logger.info("%s", report)
    return report
