"""The optional ONNX extra (oneflow-onnx, onnx, onnxruntime): `bash tools/setup.sh --onnx` installs
it into .onnx-extra/ beside the stack, never into it (requirements/onnx.txt says why); this puts it
on sys.path for the code that needs it."""

import importlib
import os
import sys

EXTRA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), ".onnx-extra")
INSTALL_HINT = "run `bash tools/setup.sh --onnx` (installs requirements/onnx.txt into .onnx-extra/)"


class OnnxExportError(Exception):
    """A model, file or environment the ONNX export or runtime cannot use; the message says why."""


def require(*modules):
    """The named modules of the extra, imported. Appended (not prepended) to sys.path, so the
    stack's own protobuf and numpy always win."""
    if os.path.isdir(EXTRA_DIR) and EXTRA_DIR not in sys.path:
        sys.path.append(EXTRA_DIR)
    try:
        return [importlib.import_module(name) for name in modules]
    except ImportError as e:
        raise OnnxExportError(f"the ONNX extra is missing ({e}): {INSTALL_HINT}") from None
