"""A safetensors file (or a checkpoint in safetensors shards) as {name: LazyArray}: each array is
read from disk when it is asked for.

The format (8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
then the data) is read with plain file reads, not mmap: a rank that reads only its own tensors
never has the rest of the file resident in its memory.
"""

import json
import os
import struct
from functools import partial

import numpy as np

from libai_vit.pretrained.torch_pickle import LazyArray, PretrainedError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_sharded(index_path):
    """The checkpoint whose shards a Hugging Face `*.safetensors.index.json` lists (its
    "weight_map": name -> shard file beside the index), as one {name: LazyArray}."""
    try:
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise PretrainedError(f"{index_path}: not a safetensors index ({type(e).__name__}: {e})")
    folder = os.path.dirname(index_path)
    out = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise PretrainedError(f"{index_path}: its shard {shard} is not beside it")
        arrays = read(shard_path)
        out.update({k: v for k, v in arrays.items() if weight_map.get(k) == shard})
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise PretrainedError(
            f"{index_path}: {missing[0]} is not in its shard {weight_map[missing[0]]}"
        )
    return out


def read(path):
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        (length,) = struct.unpack("<Q", f.read(8))
        if length > size - 8:
            raise PretrainedError(f"{path}: corrupt safetensors file (header past the end)")
        try:
            header = json.loads(f.read(length))
        except ValueError as e:
            raise PretrainedError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    out = {}
    for name, entry in header.items():
        if entry["dtype"] not in _DTYPES and entry["dtype"] != "BF16":
            raise PretrainedError(f"{path}: {name} has unsupported dtype {entry['dtype']}")
        begin, end = (8 + length + offset for offset in entry["data_offsets"])
        if end > size:
            raise PretrainedError(f"{path}: corrupt safetensors file ({name} is truncated)")
        out[name] = LazyArray(entry["shape"], partial(_read, path, begin, end, entry))
    return out


def _read(path, begin, end, entry):
    with open(path, "rb") as f:
        f.seek(begin)
        raw = f.read(end - begin)
    if entry["dtype"] == "BF16":  # bfloat16 is the top half of a float32
        value = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        value = np.frombuffer(raw, np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<"))
        value = value.astype(value.dtype.newbyteorder("="))
    return value.reshape(entry["shape"])
