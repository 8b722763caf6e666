"""Read a PyTorch checkpoint (`torch.save`'s zip format: .pth/.pt/.bin) into numpy, without torch.

A pickle can run arbitrary code, so by default this unpickler resolves only what a tensor checkpoint
needs (like torch.load(weights_only=True)): torch's tensor-rebuild functions and storage types,
mapped to numpy shims, plus OrderedDict. Any other global is refused unless the caller trusts the
file. Torch's own classes are never imported: torch is not installed here.
"""

import collections
import pickle
import zipfile

import numpy as np


class PretrainedError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class LazyArray:
    """A checkpoint's tensor, read from its file when `np.asarray` asks for it (so a rank reads
    only the tensors it holds); `shape` is known without reading."""

    def __init__(self, shape, read):
        self.shape, self._read = tuple(shape), read

    def __array__(self, dtype=None):
        value = self._read()
        return value if dtype is None else value.astype(dtype)


def _rebuild_tensor_v2(
    storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    def read():
        data = storage()
        if not size:
            return np.array(data[offset])
        view = np.lib.stride_tricks.as_strided(
            data[offset:], shape=tuple(size), strides=tuple(s * data.itemsize for s in stride)
        )
        return np.array(view)  # own the memory: the view aliases the whole storage

    return LazyArray(size, read)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive, root, path, trust):
        super().__init__(file)
        self._root, self._path, self._trust = root, path, trust
        self._big_endian = (
            f"{root}/byteorder" in archive.namelist()
            and archive.read(f"{root}/byteorder").strip() == b"big"
        )

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        if module == "torch" or module.startswith("torch."):
            raise PretrainedError(
                f"{self._path}: needs torch's {module}.{name}, which cannot be read without "
                f"torch (only dense tensors and plain containers are supported)"
            )
        if not self._trust:
            raise PretrainedError(
                f"{self._path}: refusing to unpickle {module}.{name} (a pickle can run code; only "
                f"tensors and plain containers are read by default): pass trust=True if you trust "
                f"this file"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise PretrainedError(f"{self._path}: unsupported persistent record {pid!r}")
        path, entry, big_endian = self._path, f"{self._root}/data/{key}", self._big_endian

        def read():  # the storage's bytes, from the archive, when a tensor of it is read
            with zipfile.ZipFile(path) as archive:
                raw = archive.read(entry)
            order = ">" if big_endian else "<"
            if storage_type.dtype == "bfloat16":  # bfloat16 is the top half of a float32
                halves = np.frombuffer(raw, dtype=order + "u2", count=numel).astype(np.uint32)
                return (halves << 16).view(np.float32)
            dtype = np.dtype(storage_type.dtype).newbyteorder(order)
            return np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))

        return read


def load(path, trust=False, lazy=False):
    """The object `torch.save` wrote to `path`, tensors as numpy arrays (`lazy`: as LazyArray,
    read when `np.asarray` asks)."""
    if not zipfile.is_zipfile(path):
        raise PretrainedError(
            f"{path}: not a zip-format torch checkpoint (legacy pre-1.6 torch files are "
            f"not supported: re-save it with a recent torch)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pkl:
                raise PretrainedError(
                    f"{path}: a zip archive without data.pkl, not a torch checkpoint"
                )
            root = pkl[0].split("/")[0]
            with archive.open(pkl[0]) as f:
                obj = _Unpickler(f, archive, root, path, trust).load()
        return obj if lazy else materialize(obj)
    except PretrainedError:
        raise
    except Exception as e:  # truncated archives, bad CRCs, broken pickles
        raise PretrainedError(
            f"{path}: corrupt torch checkpoint ({type(e).__name__}: {e})"
        ) from None


def materialize(obj):
    """`obj` with every LazyArray in its dicts, lists and tuples read into a numpy array."""
    if isinstance(obj, LazyArray):
        return np.asarray(obj)
    if isinstance(obj, dict):
        return type(obj)((k, materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(materialize(v) for v in obj)
    return obj
