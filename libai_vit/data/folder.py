"""An ImageFolder (`root/train/<class>/*`, `root/val/<class>/*`) that survives the bad files of a
large dataset: LiBai's ImageNetDataset with checks before training and skipping of unreadable
images.

- an empty class folder, a missing split, or a val split whose classes differ from train's is an
  error at construction, i.e. before the first step;
- a corrupt or truncated file is skipped with a warning naming it and a running count (the first
  ten in a process; after that the count alone, at 100, 1000, ...); the sample is replaced by the
  next readable one (index + 1, + 2, ...), so batch shapes and the data order for a seed stay
  fixed;
- grayscale, CMYK, palette and alpha images become RGB (transparent pixels on white).
"""

import logging
import os
from collections import Counter

import oneflow as flow
from libai.data.structures import DistTensorData, Instance
from oneflow.utils.data import Dataset
from PIL import Image

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A dataset folder that cannot be trained on; the message names the folder and what is
    wrong."""


def list_classes(split_dir):
    """The class folder names of `split_dir`, sorted: their positions are the labels."""
    if not os.path.isdir(split_dir):
        raise DatasetError(
            f"{split_dir}: no such folder "
            "(expected <root>/train/<class>/* and <root>/val/<class>/*)"
        )
    classes = sorted(
        e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")
    )
    if not classes:
        raise DatasetError(f"{split_dir}: no class folders")
    return classes


def _image_files(folder):
    return sorted(
        e.path
        for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMG_EXTENSIONS)
    )


def load_rgb(path):
    """The image at `path` as RGB, fully decoded (so a truncated file fails here, not in a
    transform)."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


class ImageFolder(Dataset):
    """`root/<split>/<class>/<image>`; split "train" or "val" as LiBai's ImageNetDataset.

    `classes`: use only these class folders (labels in this order), e.g. a subset for pretraining;
    default: every folder of the train split. Items are LiBai Instances (images, labels).
    """

    def __init__(self, root, train=True, transform=None, classes=None):
        self.root = root
        self.split = "train" if train else "val"
        self.transform = transform
        split_dir = os.path.join(root, self.split)
        found = list_classes(split_dir)
        if classes is None:
            classes = found
            train_dir = os.path.join(root, "train")
            if not train and os.path.isdir(train_dir):
                train_classes = list_classes(train_dir)
                if train_classes != found:
                    only_val = sorted(set(found) - set(train_classes))
                    only_train = sorted(set(train_classes) - set(found))
                    raise DatasetError(
                        f"{split_dir}: its classes differ from {train_dir}'s "
                        f"(only in val: {_few(only_val)}; only in train: {_few(only_train)})"
                    )
        else:
            classes = [str(c) for c in classes]
            absent = [c for c in classes if c not in found]
            if absent:
                raise DatasetError(
                    f"{split_dir}: no folder for the configured classes {_few(absent)}"
                )
        self.classes = list(classes)
        self.samples = []
        for label, name in enumerate(self.classes):
            files = _image_files(os.path.join(split_dir, name))
            if not files:
                raise DatasetError(
                    f"{os.path.join(split_dir, name)}: empty class folder "
                    f"(no {'/'.join(IMG_EXTENSIONS)} files)"
                )
            self.samples += [(path, label) for path in files]
        # indices found bad by this process: skipped without a second warning
        self._unreadable = set()
        self._per_class = Counter(label for _, label in self.samples)
        self._bad_per_class = Counter()

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        for step in range(len(self.samples)):
            i = (index + step) % len(self.samples)
            if i in self._unreadable:
                continue
            path, label = self.samples[i]
            try:
                img = load_rgb(path)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                self._unreadable.add(i)
                _warn_skipped(path, e, len(self._unreadable))
                self._bad_per_class[label] += 1
                if self._bad_per_class[label] == self._per_class[label]:  # it would silently vanish
                    folder = os.path.dirname(path)
                    raise DatasetError(
                        f"{folder}: no readable image in the class folder "
                        f"({self._per_class[label]} files, all unreadable): fix or remove it"
                    )
                continue
            if self.transform is not None:
                img = self.transform(img)
            return Instance(
                images=DistTensorData(img, placement_idx=0),
                labels=DistTensorData(flow.tensor(label, dtype=flow.long), placement_idx=-1),
            )
        raise DatasetError(f"{os.path.join(self.root, self.split)}: no readable image")


# a process names this many unreadable images, then only counts them (at 100, 1000, ...): a
# damaged share of a large dataset would otherwise fill the log with one line per image
LISTED_UNREADABLE = 10


def _warn_skipped(path, error, count):
    if count <= LISTED_UNREADABLE:
        logger.warning(
            "skipping unreadable image %s (%s: %s); %d skipped so far in this process",
            path,
            type(error).__name__,
            error,
            count,
        )
    elif count == LISTED_UNREADABLE + 1 or str(count).rstrip("0") == "1":
        logger.warning(
            "%d unreadable images skipped so far in this process (the latest %s); further ones "
            "are counted, not listed (next count at %d)",
            count,
            path,
            10 ** len(str(count)),
        )


def _few(names, n=5):
    return (
        ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")
        if names
        else "none"
    )
