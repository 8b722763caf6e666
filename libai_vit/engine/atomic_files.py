"""Files that are whole or absent: data synced before a rename publishes it, renames synced too."""

import hashlib
import os


def sha256_synced(path):
    """The sha256 of `path`, after syncing it (the data is on disk before a rename publishes it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
        os.fsync(f.fileno())
    return h.hexdigest()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, text):
    """Replace `path` with `text` so that a reader sees the old or the new content, never a part."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")
