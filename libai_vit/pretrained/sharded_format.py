"""This project's sharded checkpoint entry (what the training checkpointer writes): each rank
writes the slices it holds, and any layout reads back only the slices it needs.

    ENTRY/structure.pickle        rank 0: the state, a ShardedTensor in place of each tensor
    ENTRY/rank_RRRRR.safetensors  rank R: its pieces, each named json [path, [[lo, hi], ...]]

A slice replicated over a mesh axis is written once, by the rank at index 0 of that axis, so the
pieces of a tensor tile it exactly. Loading gives each tensor the placement and SBP of the live
tensor it restores (`template_of`: the parameter, its optimizer state, the EMA's copy) and fills
each rank's shard from the pieces that overlap it, reading only the rows it overlaps; a tensor with
no live counterpart is read whole on every rank and broadcast, as a whole-tensor checkpoint gives
it.
"""

import contextlib
import json
import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np
import oneflow as flow

from libai_vit import parallel

STRUCTURE = "structure.pickle"
# OneFlow dtype: (numpy dtype, safetensors name)
_DTYPES = {
    flow.float64: (np.float64, "F64"),
    flow.float32: (np.float32, "F32"),
    flow.float16: (np.float16, "F16"),
    flow.int64: (np.int64, "I64"),
    flow.int32: (np.int32, "I32"),
    flow.int8: (np.int8, "I8"),
    flow.uint8: (np.uint8, "U8"),
    flow.bool: (np.bool_, "BOOL"),
}
_NUMPY_OF = {code: np_dtype for np_dtype, code in _DTYPES.values()}
_FLOW_DTYPE = {np.dtype(np_dtype).name: dtype for dtype, (np_dtype, _) in _DTYPES.items()}


class ShardedCheckpointError(RuntimeError):
    """Pieces that do not tile a tensor: a checkpoint altered after its manifest was checked."""


@dataclass(frozen=True)
class ShardedTensor:
    """A tensor of the structure: the path its pieces are named by, and what it was."""

    path: tuple
    shape: tuple
    dtype: str  # numpy's name
    is_global: bool
    device_type: str


def is_sharded(entry_dir):
    return os.path.isfile(os.path.join(entry_dir, STRUCTURE))


def tensors(state, path=()):
    """(path, tensor) of every tensor in a nested state (dicts, lists, tuples), in order."""
    if isinstance(state, flow.Tensor):
        yield path, state
    elif isinstance(state, dict):
        for k, v in state.items():
            yield from tensors(v, path + (k,))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from tensors(v, path + (i,))


def records(structure, path=()):
    """(path, ShardedTensor) of every tensor of a loaded structure, in order."""
    if isinstance(structure, ShardedTensor):
        yield path, structure
    elif isinstance(structure, dict):
        for k, v in structure.items():
            yield from records(v, path + (k,))
    elif isinstance(structure, (list, tuple)):
        for i, v in enumerate(structure):
            yield from records(v, path + (i,))


def _replace(state, fn, path=()):
    """`state` with fn(path, value) in place of each tensor or ShardedTensor."""
    if isinstance(state, (flow.Tensor, ShardedTensor)):
        return fn(path, state)
    if isinstance(state, dict):
        out = type(state)()  # an OrderedDict stays one
        for k, v in state.items():
            out[k] = _replace(v, fn, path + (k,))
        return out
    if isinstance(state, (list, tuple)):
        return type(state)(_replace(v, fn, path + (i,)) for i, v in enumerate(state))
    return state


def _region_to_write(tensor):
    """The slice of `tensor` this rank writes (it holds it, at index 0 of every mesh axis that
    replicates it), or None."""
    if not tensor.is_global:
        return tuple(slice(0, n) for n in tensor.shape) if flow.env.get_rank() == 0 else None
    region = parallel.local_region(tensor)
    if region is None:
        return None
    ranks = np.asarray(tensor.placement.ranks)
    where = np.argwhere(ranks == flow.env.get_rank())[0]
    replicated = [i for i, s in enumerate(tensor.sbp) if s == flow.sbp.broadcast]
    return None if any(where[i] for i in replicated) else region


def _reduced(tensor):
    """`tensor` with its partial-sum mesh axes reduced (a collective over its placement)."""
    if not tensor.is_global or flow.sbp.partial_sum not in tensor.sbp:
        return tensor
    sbp = [flow.sbp.broadcast if s == flow.sbp.partial_sum else s for s in tensor.sbp]
    return tensor.to_global(placement=tensor.placement, sbp=sbp)


def save(state, entry_dir):
    """Write `state` as a sharded entry into the existing folder `entry_dir`; called on every rank
    (a rank writes its own file, and holds one piece's copy at a time beyond the state)."""
    rank = flow.env.get_rank()
    pieces = []
    for path, tensor in tensors(state):
        tensor = _reduced(tensor)
        region = _region_to_write(tensor)
        if region is not None:
            pieces.append((json.dumps([list(path), [[r.start, r.stop] for r in region]]), tensor))
    if pieces:
        _write_safetensors(os.path.join(entry_dir, f"rank_{rank:05d}.safetensors"), pieces)
    if rank == 0:

        def record(path, t):
            dtype = np.dtype(_DTYPES[t.dtype][0]).name
            device = parallel.device_type(t)
            return ShardedTensor(path, tuple(t.shape), dtype, t.is_global, device)

        with open(os.path.join(entry_dir, STRUCTURE), "wb") as f:
            pickle.dump(_replace(state, record), f)
            f.flush()
            os.fsync(f.fileno())


def _write_safetensors(file, pieces):
    """The safetensors format streamed: the header from the shapes, then each piece's bytes."""
    header, offset = {}, 0
    for name, tensor in pieces:
        np_dtype, code = _DTYPES[tensor.dtype]
        shape = list((tensor.to_local() if tensor.is_global else tensor).shape)
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(np_dtype).itemsize
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _, tensor in pieces:
            local = tensor.to_local() if tensor.is_global else tensor
            little_endian = np.dtype(_DTYPES[tensor.dtype][0]).newbyteorder("<")
            f.write(np.ascontiguousarray(local.numpy(), dtype=little_endian).tobytes())
        f.flush()
        os.fsync(f.fileno())


class _Pieces:
    """Every rank file's pieces of one entry, by tensor path; reads any box of a tensor with plain
    file reads of the rows it spans (mmap would leave every page read resident until unmapped)."""

    def __init__(self, entry_dir, files):
        self.index = {}
        for name in sorted(os.listdir(entry_dir)):
            if name.endswith(".safetensors"):
                f = files.enter_context(open(os.path.join(entry_dir, name), "rb"))
                (length,) = struct.unpack("<Q", f.read(8))
                for key, entry in json.loads(f.read(length)).items():
                    if key == "__metadata__":
                        continue
                    path, bounds = json.loads(key)
                    begin = 8 + length + entry["data_offsets"][0]
                    dtype = np.dtype(_NUMPY_OF[entry["dtype"]]).newbyteorder("<")
                    piece = (bounds, f, begin, dtype, entry["shape"])
                    self.index.setdefault(tuple(path), []).append(piece)

    def read(self, record, region, out=None):
        """The box `region` of the tensor, into `out` when given (an array of its shape)."""
        if out is None:
            out = np.empty([s.stop - s.start for s in region], dtype=record.dtype)
        covered = 0
        for bounds, f, begin, dtype, shape in self.index.get(tuple(record.path), []):
            lo = [max(b[0], r.start) for b, r in zip(bounds, region)]
            hi = [min(b[1], r.stop) for b, r in zip(bounds, region)]
            if any(a >= z for a, z in zip(lo, hi)):
                continue
            box = [slice(a - b[0], z - b[0]) for a, z, b in zip(lo, hi, bounds)]
            rows = box[0] if box else slice(0, 1)
            row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            f.seek(begin + rows.start * row)
            dst = out[tuple(slice(a - r.start, z - r.start) for a, z, r in zip(lo, hi, region))]
            whole_rows = all(b == slice(0, n) for b, n in zip(box[1:], shape[1:]))
            if whole_rows and dst.flags.c_contiguous and dst.dtype == dtype:
                f.readinto(memoryview(dst.reshape(-1)).cast("B"))  # no copy on the way
            else:
                part = np.frombuffer(f.read((rows.stop - rows.start) * row), dtype)
                if box:
                    part = part.reshape(rows.stop - rows.start, *shape[1:])
                    part = part[(slice(None), *box[1:])]
                dst[...] = part.reshape(dst.shape)
            covered += int(np.prod([z - a for a, z in zip(lo, hi)], dtype=np.int64))
        if covered != out.size:
            raise ShardedCheckpointError(
                f"the pieces of {'/'.join(map(str, record.path))} cover {covered} of its "
                f"{out.size} elements"
            )
        return out


@flow.no_grad()
def load(entry_dir, template_of):
    """The entry's state; `template_of(structure)(path, shape)` gives, per tensor, (a live global
    tensor whose placement and SBP it takes, or None: broadcast over every rank; whether it is
    that very tensor's state, then filled in place: no second copy of it is made). Called on every
    rank."""
    with open(os.path.join(entry_dir, STRUCTURE), "rb") as f:
        structure = pickle.load(f)
    template = template_of(structure)
    world = list(range(flow.env.get_world_size()))
    with contextlib.ExitStack() as files:
        pieces = _Pieces(entry_dir, files)

        def restore(path, record):
            dtype = _FLOW_DTYPE[record.dtype]
            whole = tuple(slice(0, n) for n in record.shape)
            if not record.is_global:
                return flow.tensor(pieces.read(record, whole), dtype=dtype)
            like, in_place = template(record.path, record.shape)
            if like is not None and in_place and like.dtype == dtype:
                tensor = like
            elif like is not None:
                tensor = flow.empty(
                    record.shape, dtype=dtype, placement=like.placement, sbp=like.sbp
                )
            else:
                placement = flow.placement(record.device_type, world)
                tensor = flow.empty(
                    record.shape, dtype=dtype, placement=placement, sbp=flow.sbp.broadcast
                )
            region = parallel.local_region(tensor)
            if region is not None:
                local = tensor.to_local()
                # on CPU, numpy() is the tensor's own memory: the pieces are read straight into it
                view = local.numpy() if parallel.device_type(tensor) == "cpu" else None
                if view is not None and not view.flags.owndata and view.flags.writeable:
                    pieces.read(record, region, out=view)
                else:
                    local.copy_(flow.tensor(pieces.read(record, region), dtype=dtype))
            return tensor

        return _replace(structure, restore)


def read_arrays(entry_dir):
    """A sharded entry holding a flat state dict as {name: whole numpy array}, in one process."""
    with open(os.path.join(entry_dir, STRUCTURE), "rb") as f:
        structure = pickle.load(f)
    with contextlib.ExitStack() as files:
        pieces = _Pieces(entry_dir, files)
        return {
            name: pieces.read(record, tuple(slice(0, n) for n in record.shape))
            for name, record in structure.items()
        }
