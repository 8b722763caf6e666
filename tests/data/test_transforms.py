"""The fine-tuning transforms: output shapes, value ranges and the eval crop rule."""

import numpy as np
import oneflow as flow
import pytest
from flowvision.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from PIL import Image

import libai_vit  # noqa: F401
from libai_vit.data.transforms import default_crop_pct, eval_transform, train_transform

LOW = min((0 - m) / s for m, s in zip(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
HIGH = max((1 - m) / s for m, s in zip(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))


def _image(w=50, h=37, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [16, 24])
def test_train_transform_shape_and_range(size):
    t = train_transform(img_size=size, re_prob=0.0)
    for seed in range(8):
        x = t(_image(seed=seed))
        assert isinstance(x, flow.Tensor) and tuple(x.shape) == (3, size, size)
        assert LOW - 1e-4 <= float(x.min()) and float(x.max()) <= HIGH + 1e-4


def test_random_erasing_fills_a_box_with_noise():
    t = train_transform(img_size=32, re_prob=1.0, auto_augment=None, color_jitter=None)
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    x = t(white).numpy()
    # a white image normalises to HIGH everywhere except the erased box (normal noise)
    erased = ~np.isclose(x, x.max(axis=(1, 2), keepdims=True))
    assert 0 < erased.mean() < 1


def test_eval_transform_is_deterministic_center_crop():
    t = eval_transform(img_size=16)
    img = _image(40, 30)
    a, b = t(img), t(img)
    assert tuple(a.shape) == (3, 16, 16) and np.array_equal(a.numpy(), b.numpy())
    names = [type(s).__name__ for s in t.transforms]
    assert names[:2] == ["Resize", "CenterCrop"] and t.transforms[0].size == 18  # 16 / 0.875


def test_crop_pct_rule():
    assert default_crop_pct(224) == 0.875 and default_crop_pct(384) == 1.0
    assert eval_transform(img_size=384).transforms[0].size == 384
