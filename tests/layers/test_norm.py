"""The CPU LayerNorm path against a numpy reference, forward and backward."""

import numpy as np
import oneflow as flow

import libai_vit  # noqa: F401
from libai_vit.layers.norm import LayerNorm, layer_norm


def _reference(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def test_cpu_layer_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (4, 7, 24)).astype(np.float32)
    w, b = rng.normal(size=24).astype(np.float32), rng.normal(size=24).astype(np.float32)
    got = layer_norm(flow.tensor(x), flow.tensor(w), flow.tensor(b), 1e-6).numpy()
    np.testing.assert_allclose(got, _reference(x, w, b, 1e-6), rtol=1e-5, atol=1e-5)


def test_layer_norm_module_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    norm = LayerNorm(8, eps=1e-5)  # global parameters, as in the model
    x_np = rng.normal(size=(3, 8)).astype(np.float64)
    x = flow.tensor(x_np.astype(np.float32), requires_grad=True)
    x_g = x.to_global(placement=norm.weight.placement, sbp=norm.weight.sbp)
    (
        norm(x_g)
        * flow.tensor(np.arange(8, dtype=np.float32)).to_global(
            placement=norm.weight.placement, sbp=norm.weight.sbp
        )
    ).sum().backward()

    def loss(v):
        return (_reference(v, 1.0, 0.0, 1e-5) * np.arange(8)).sum()

    eps, numeric = 1e-6, np.zeros_like(x_np)
    for idx in np.ndindex(x_np.shape):
        plus, minus = x_np.copy(), x_np.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (loss(plus) - loss(minus)) / (2 * eps)
    np.testing.assert_allclose(x.grad.numpy(), numeric, rtol=1e-3, atol=1e-4)
