"""The train loader: an image's augmentation depends on its place in the sample stream only, so
a run resumed mid-epoch with loader workers draws exactly what the uninterrupted run drew, and the
number of workers changes nothing."""

import numpy as np
import pytest
from PIL import Image

from libai_vit.data.build import build_train_loader
from libai_vit.data.folder import ImageFolder
from libai_vit.data.transforms import train_transform

BATCH = 4


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for i in range(24):
        folder = root / "train" / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            folder / f"{i}.jpg", quality=90
        )
    return str(root)


def _batches(root, workers, n, consumed=0, re_prob=0.5):
    # RandomResizedCrop, flip, RandAugment (Python's random), random erasing with OneFlow noise
    transform = train_transform(img_size=32, re_prob=re_prob)
    loader, _, _ = build_train_loader(
        ImageFolder(root, train=True, transform=transform),
        BATCH,
        num_workers=workers,
        consumed_samples=consumed,
        seed=7,
    )
    it = iter(loader)
    out = [next(it).get("images").tensor.numpy() for _ in range(n)]
    del it, loader
    return out


def test_resume_mid_epoch_with_workers_draws_the_same_augmentations(image_root):
    full = _batches(image_root, workers=2, n=9)  # 6 steps an epoch: crosses into the second
    resumed = _batches(image_root, workers=2, n=5, consumed=4 * BATCH)
    for step, (a, b) in enumerate(zip(full[4:], resumed), start=4):
        np.testing.assert_array_equal(a, b, err_msg=f"step {step}")


def test_the_number_of_workers_changes_nothing(image_root):
    single = _batches(image_root, workers=0, n=3)
    for a, b in zip(single, _batches(image_root, workers=2, n=3)):
        np.testing.assert_array_equal(a, b)


def test_loading_in_the_main_process_leaves_pythons_and_numpys_streams_where_they_were(image_root):
    import random

    random.seed(1), np.random.seed(1)
    expected = random.random(), np.random.rand()
    random.seed(1), np.random.seed(1)
    _batches(image_root, workers=0, n=2)
    assert (random.random(), np.random.rand()) == expected  # mixup draws from them after loading
