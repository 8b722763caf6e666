"""Our CPU kernels (libai_vit/kernels) against a float64 numpy reference and against OneFlow's
own kernels, on every instruction set this CPU runs: odd sizes, non-contiguous inputs, large and
tiny values, NaN/Inf, eager and nn.Graph. kernel_probe.py runs the ops in a subprocess per
configuration (OneFlow's kernels: LIBAI_VIT_KERNELS=0); the results are compared here."""

import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from kernel_probe import SPECIALS, inputs

import libai_vit

from conftest import ROOT

PROBE = os.path.join(ROOT, "tests", "kernels", "kernel_probe.py")
TINY = 1e-30  # below this, results are compared absolutely (ulps of subnormals mean nothing)
ISAS = [
    isa
    for isa, flags in (("avx512", {"avx512f"}), ("avx2", {"avx2", "fma"}), ("generic", set()))
    if flags <= set(open("/proc/cpuinfo").read().split())
]

pytestmark = pytest.mark.skipif(
    shutil.which("g++") is None and not libai_vit.kernels.active(),
    reason="no C++ compiler: tools/setup.sh cannot build the kernels here",
)


def _probe(tmp_path_factory, **env):
    out = tmp_path_factory.mktemp("probe") / "out.npz"
    subprocess.run(
        [sys.executable, PROBE, str(out)],
        check=True,
        env=dict(os.environ, GLOG_minloglevel="2", **env),
        capture_output=True,
        timeout=300,
    )
    return dict(np.load(out))


@pytest.fixture(scope="module")
def oneflow_own(tmp_path_factory):
    return _probe(tmp_path_factory, LIBAI_VIT_KERNELS="0")


@pytest.fixture(scope="module", params=ISAS)
def ours(request, tmp_path_factory):
    out = _probe(tmp_path_factory, LIBAI_VIT_KERNELS_ISA=request.param)
    out["isa"] = request.param
    return out


A = inputs()
X = A["grid"].astype(np.float64)
FINITE = np.isfinite(X)
np.seterr(invalid="ignore", over="ignore")  # the references' own inf * 0 at the specials


def _phi(x):
    return 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2.0))


def _ulps(got, ref, scale=None):
    """|got - ref| in float32 spacings at |scale| (default |ref|), where that is normal."""
    scale = np.abs(ref if scale is None else scale)
    keep = np.isfinite(ref) & (scale >= TINY)
    return np.abs(got[keep] - ref[keep]) / np.spacing(scale[keep].astype(np.float32))


def _softmax64(x):
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)


def _layer_norm64(x, gamma, beta, eps=1e-5):
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    inv = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mu) * inv
    return xhat * (1 if gamma is None else gamma) + (0 if beta is None else beta), xhat, inv


# ---------------------------------------------------------------------------------------- GELU
def test_gelu_is_within_a_few_ulps_of_float64(ours):
    ref = X * _phi(X)
    fwd = _ulps(ours["gelu"][FINITE].astype(np.float64), ref[FINITE])
    # the slope Phi + x phi is a sum that crosses 0: its error is measured against its terms
    density = X * np.exp(-0.5 * X * X) / math.sqrt(2 * math.pi)
    dy = A["grid_dy"].astype(np.float64)
    slope = (_phi(X) + density) * dy
    scale = np.maximum(np.abs(_phi(X)), np.abs(density)) * np.abs(dy)
    bwd = _ulps(ours["gelu_dx"][FINITE].astype(np.float64), slope[FINITE], scale[FINITE])
    assert fwd.max() <= 6 and fwd.mean() < 0.5, (ours["isa"], fwd.max(), fwd.mean())
    assert bwd.max() <= 8 and bwd.mean() < 0.5, (ours["isa"], bwd.max(), bwd.mean())


def test_gelu_special_values(ours):
    """inf, -inf, nan, 0, -0, 1e-30, -1e-30, 1e-45, 3e38, -3e38: the limits, where OneFlow's
    kernels give NaN at -inf (and its backward NaN at both infinities)."""
    n = len(SPECIALS)
    for name in ("gelu", "fast_gelu"):
        y, slope = ours[name][-n:], ours[f"{name}_dx"][-n:] / A["grid_dy"][-n:]
        assert y[0] == np.inf and slope[0] == 1.0
        assert y[1] == 0.0 and np.signbit(y[1]) and abs(slope[1]) < 1e-30
        assert np.isnan(y[2]) and np.isnan(slope[2])
        assert y[3] == 0.0 and y[4] == 0.0 and (slope[3:5] == 0.5).all()
        np.testing.assert_allclose(y[5:8], SPECIALS[5:8] / 2, rtol=1e-6, atol=1e-45)
        assert y[8] == SPECIALS[8] and slope[8] == 1.0 and y[9] == 0.0 and abs(slope[9]) < 1e-30


def test_fast_gelu_matches_float64(ours):
    u = 0.7978845608028654 * (X + 0.044714998453855515 * X**3)
    with np.errstate(over="ignore"):
        sig = 1 / (1 + np.exp(-2 * u))  # = (1 + tanh u) / 2, no cancellation
    ref = X * sig
    # exp(-2u) carries the float32 rounding of u: relative error ~ |2u| 2^-24 (OneFlow's own,
    # 1 + tanh(u), cancels for u << 0: ~1e6 times that at x = -8)
    keep = FINITE & (np.abs(ref) >= TINY) & (X < 20)
    rel = np.abs(ours["fast_gelu"][keep] / ref[keep] - 1) / ((1 + np.abs(2 * u[keep])) * 2.0**-24)
    assert rel.max() <= 3, (ours["isa"], rel.max())
    central = FINITE & (X > -3)
    fwd = _ulps(ours["fast_gelu"][central].astype(np.float64), ref[central])
    assert fwd.max() <= 12 and fwd.mean() < 0.4, (ours["isa"], fwd.max(), fwd.mean())
    du = 2 * 0.7978845608028654 * (1 + 3 * 0.044714998453855515 * X**2)
    with np.errstate(invalid="ignore", over="ignore"):
        slope = (sig + X * sig * (1 - sig) * du) * A["grid_dy"]
    np.testing.assert_allclose(ours["fast_gelu_dx"][central], slope[central], rtol=2e-6, atol=1e-6)


def test_gelu_agrees_with_oneflows_kernels(ours, oneflow_own):
    for name in ("gelu", "gelu_dx", "fast_gelu", "fast_gelu_dx"):
        mine, theirs = ours[name][FINITE], oneflow_own[name][FINITE]
        ok = np.isfinite(theirs) & (np.abs(X[FINITE]) < 1e4)  # OneFlow's x^3 overflows beyond
        np.testing.assert_allclose(mine[ok], theirs[ok], rtol=0, atol=2e-6, err_msg=name)
    # non-contiguous input: the same as its contiguous copy
    block = A["grid"][: 251 * 261].reshape(251, 261).T
    np.testing.assert_array_equal(
        ours["gelu_transposed"], ours["gelu"][: 251 * 261].reshape(251, 261).T
    )
    assert block.shape == ours["gelu_transposed"].shape


def test_gelu_is_more_accurate_than_oneflows_in_the_negative_tail(ours, oneflow_own):
    """OneFlow's 0.5 x (1 + erf(x / sqrt2)) cancels for x << 0; ours keeps relative precision
    (this is also how the tests tell the two kernels apart)."""
    tail = FINITE & (X < -4) & (X > -12)
    ref = X * _phi(X)
    assert _ulps(ours["gelu"][tail].astype(np.float64), ref[tail]).max() <= 6
    assert _ulps(oneflow_own["gelu"][tail].astype(np.float64), ref[tail]).max() > 1e4


# ------------------------------------------------------------------------------------- softmax
def test_softmax_matches_float64_and_oneflow(ours, oneflow_own):
    ref = _softmax64(A["soft"])
    finite_rows = [0, 1, 2, 3, 6]
    np.testing.assert_allclose(ours["softmax"][finite_rows], ref[finite_rows], rtol=1e-6, atol=TINY)
    np.testing.assert_allclose(
        ours["softmax"][finite_rows], oneflow_own["softmax"][finite_rows], rtol=1e-6, atol=1e-9
    )
    assert (ours["softmax"][3, ::3] == 0).all()  # masked keys
    assert np.isnan(ours["softmax"][4]).all()  # a fully masked row, as OneFlow's
    # a NaN input makes its row NaN (as PyTorch); OneFlow's oneDNN softmax makes only that entry
    assert np.isnan(ours["softmax"][5]).all() and np.isnan(oneflow_own["softmax"][5, 7])
    np.testing.assert_allclose(ours["softmax_odd"], _softmax64(A["soft_odd"]), rtol=1e-6, atol=0)
    np.testing.assert_allclose(
        ours["softmax_transposed"],
        _softmax64(A["soft_odd"].transpose(0, 2, 1)),
        rtol=4e-7,
        atol=0,
    )
    y, dy = ref, A["soft_dy"].astype(np.float64)
    dx = (dy - (y * dy).sum(-1, keepdims=True)) * y
    for got in (ours["softmax_dx"], oneflow_own["softmax_dx"]):
        np.testing.assert_allclose(got[finite_rows], dx[finite_rows], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------- LayerNorm
def test_layer_norm_matches_float64_and_the_composed_layer_norm(ours, oneflow_own):
    x, gamma, beta, dy = A["norm"], A["gamma"], A["beta"], A["norm_dy"].astype(np.float64)
    y, xhat, inv = _layer_norm64(x, gamma, beta)
    np.testing.assert_allclose(ours["ln"], y, rtol=0, atol=2e-6)
    np.testing.assert_allclose(ours["ln_plain"], _layer_norm64(x, None, None)[0], atol=2e-6)
    np.testing.assert_allclose(
        ours["ln_wide"], _layer_norm64(A["norm_wide"], None, None, 1e-6)[0], atol=2e-6
    )
    # the composed LayerNorm (OneFlow's kernels) agrees, except on the rows with mean 1e4, where
    # its float32 mean cancels (ours takes the statistics of x - x[0])
    np.testing.assert_allclose(ours["ln"][1:], oneflow_own["ln"][1:], rtol=0, atol=2e-6)
    assert np.abs(oneflow_own["ln"][0] - y[0]).max() > 100 * np.abs(ours["ln"][0] - y[0]).max()
    g = dy * gamma
    dx = inv * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    np.testing.assert_allclose(ours["ln_dx"], dx, rtol=1e-4, atol=1e-5)
    # the composed LayerNorm's backward carries its float32 mean's rounding at mean 1e4
    np.testing.assert_allclose(oneflow_own["ln_dx"][1:], dx[1:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["ln_dgamma"], (dy * xhat).sum((0, 1)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours["ln_dbeta"], dy.sum((0, 1)), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ eager and graph
def test_graph_step_uses_the_kernels_and_matches_eager(ours, oneflow_own):
    assert ours["active"] == "gelu,softmax,layer_norm" and oneflow_own["active"] == ""
    for name in [k for k in ours if k.startswith("eager_")]:
        graph = name.replace("eager_", "graph_")
        np.testing.assert_allclose(ours[graph], ours[name], rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(
            ours[name], oneflow_own[name], rtol=1e-4, atol=1e-5, err_msg=name
        )
