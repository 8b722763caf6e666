"""DeiT III's BCE loss (timm's BinaryCrossEntropy arguments), against its formula."""

import numpy as np
import oneflow as flow

import libai_vit  # noqa: F401
from libai_vit.losses import BinaryCrossEntropy


def _bce(x, t):
    return np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))))


def test_bce_on_binarised_mixup_targets():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    t = np.zeros((4, 5), np.float32)
    t[np.arange(4), [0, 1, 2, 3]] = 0.7
    t[np.arange(4), [3, 2, 1, 0]] += 0.3
    loss = BinaryCrossEntropy(target_threshold=0.0)(flow.tensor(x), flow.tensor(t))
    np.testing.assert_allclose(loss.numpy(), _bce(x, (t > 0).astype(np.float32)), rtol=1e-6)
    # no threshold: the soft targets as they are
    soft = BinaryCrossEntropy()(flow.tensor(x), flow.tensor(t))
    np.testing.assert_allclose(soft.numpy(), _bce(x, t), rtol=1e-6)


def test_bce_on_class_indices_with_smoothing():
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    labels = np.array([0, 3, 1])
    loss = BinaryCrossEntropy(smoothing=0.1)(flow.tensor(x), flow.tensor(labels))
    t = np.full((3, 4), 0.1 / 4, np.float32)
    t[np.arange(3), labels] = 1 - 0.1 + 0.1 / 4
    np.testing.assert_allclose(loss.numpy(), _bce(x, t), rtol=1e-6)
