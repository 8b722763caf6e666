"""The demo's data: scikit-learn's handwritten digits (real 8x8 scans, 1797 of them) written as an
ImageFolder (`train/<digit>/*.png`, `val/<digit>/*.png`), upscaled to RGB PNGs."""

import fcntl
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from libai_vit.data.folder import ImageFolder


def write_digits_imagefolder(root, img_size=32, val_fraction=0.25, seed=0):
    """Write the ImageFolder once; a finished one (marked by `.complete`) is left as it is."""
    if os.path.exists(os.path.join(root, ".complete")):
        return root
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    n_val = int(len(order) * val_fraction)
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".digits-", dir=parent)  # complete or absent: rename at the end
    for rank, idx in enumerate(order):
        split = "val" if rank < n_val else "train"
        label = int(digits.target[idx])
        pixels = (digits.images[idx] * (255.0 / 16.0)).astype(np.uint8)
        image = (
            Image.fromarray(pixels, mode="L")
            .resize((img_size, img_size), Image.BICUBIC)
            .convert("RGB")
        )
        folder = os.path.join(tmp, split, str(label))
        os.makedirs(folder, exist_ok=True)
        image.save(os.path.join(folder, f"{idx:04d}.png"))
    open(os.path.join(tmp, ".complete"), "w").close()
    if os.path.exists(root):
        shutil.rmtree(root)
    os.rename(tmp, root)
    return root


class DigitsDataset(ImageFolder):
    """The project's ImageFolder over the digits, written first (at `img_size` px) if missing: one
    process writes, the others wait on a file lock."""

    def __init__(self, root, train=True, transform=None, img_size=32):
        os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
        with open(os.path.abspath(root) + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_digits_imagefolder(root, img_size=img_size)
        super().__init__(root, train=train, transform=transform)
