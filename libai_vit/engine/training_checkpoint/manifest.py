"""A training checkpoint's `manifest.json`: iteration, world size, layout, the config, and every
file's size and sha256; written last, so a checkpoint without one was never completed."""

import json
import os

from libai_vit.engine.atomic_files import sha256_synced, write_atomic

MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A training checkpoint that cannot be written or read; the message names file and cause."""


def _files(root):
    out = []
    for d, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return sorted(f for f in out if f != MANIFEST)


def write_manifest(path, **fields):
    """Record every file under checkpoint directory `path` (size, sha256) with `fields`."""
    files = {
        rel: (os.path.getsize(os.path.join(path, rel)), sha256_synced(os.path.join(path, rel)))
        for rel in _files(path)
    }
    write_atomic(
        os.path.join(path, MANIFEST), json.dumps(dict(fields, files=files), indent=1, default=str)
    )


def verify(path):
    """Check a checkpoint directory against its manifest: the manifest, or a CheckpointError."""
    manifest_file = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} does not exist or is not a directory")
    try:
        with open(manifest_file) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {path} is incomplete: {manifest_file} is missing"
        ) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint manifest {manifest_file} is unreadable: {e}") from None
    for rel, (size, digest) in manifest["files"].items():
        f = os.path.join(path, rel)
        if not os.path.isfile(f):
            raise CheckpointError(f"checkpoint file {f} is missing")
        if os.path.getsize(f) != size:
            raise CheckpointError(
                f"checkpoint file {f} is truncated or altered: "
                f"{os.path.getsize(f)} bytes, the manifest says {size}"
            )
        if sha256_synced(f) != digest:
            raise CheckpointError(
                f"checkpoint file {f} is corrupt: its sha256 differs from the manifest"
            )
    return manifest
