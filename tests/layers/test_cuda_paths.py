"""CUDA-only branches, checked on CPU: OneFlow checks an op's arguments, dtypes, shapes and SBP
before it looks for a kernel, so the CUDA branch forced onto CPU tensors must get as far as the
kernel lookup ("Cannot find the kernel") and no further. Calls that abort (OneFlow's CPU LayerNorm
kernel is a fatal "TODO") run in a subprocess."""

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import oneflow as flow
import pytest

import libai_vit  # noqa: F401  (compat fixes)
from libai_vit.layers import attention as attention_mod
from libai_vit.layers import flash
from libai_vit.layers.attention import attention

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NO_KERNEL = "Cannot find the kernel matching"
B, H, Q, K, D = 2, 4, 5, 7, 8

# every mask form math and flash accept: bool / int / float 0-1, any rank, key masks, last dim 1
MASKS = {
    "none": None,
    "bool_2d": flow.ones(Q, K, dtype=flow.bool).tril(),
    "bool_4d": flow.rand(B, 1, Q, K) > 0.3,
    "bool_key_padding": flow.rand(B, 1, 1, K) > 0.3,
    "int_key_padding": (flow.rand(B, 1, 1, K) > 0.3).to(flow.int64),
    "float_01_3d": (flow.rand(1, Q, K) > 0.3).to(flow.float32),
    "int8_query_last_dim_1": (flow.rand(B, 1, Q, 1) > 0.3).to(flow.int8),
}


@pytest.fixture
def forced_cuda(monkeypatch):
    monkeypatch.setattr(attention_mod, "device_type", lambda t: "cuda")


def _qkv(global_heads_split=False):
    q, k, v = flow.randn(B, H, Q, D), flow.randn(B, H, K, D), flow.randn(B, H, K, D)
    if global_heads_split:
        placement = flow.placement("cpu", [0])
        q, k, v = (t.to_global(placement=placement, sbp=flow.sbp.split(1)) for t in (q, k, v))
    return q, k, v


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("causal", [False, True])
def test_math_and_flash_accept_every_mask_form(mask, causal):
    q, k, v = _qkv()
    ref = attention(q, k, v, mask=MASKS[mask], causal=causal, backend="math")
    out = attention(q, k, v, mask=MASKS[mask], causal=causal, backend="flash")
    rows = flow.isfinite(ref).all(dim=-1)  # fully masked rows are undefined (math: NaN)
    assert flow.allclose(out[rows], ref[rows], atol=1e-5)


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dropout_p", [0.0, 0.1])
@pytest.mark.parametrize("is_global", [False, True])
def test_fused_backend_reaches_the_kernel_with_every_mask_form(
    forced_cuda, mask, causal, dropout_p, is_global
):
    q, k, v = _qkv(is_global)
    bias = flow.randn(1, H, Q, K) if mask == "bool_4d" else None  # the bias path too, once per form
    with pytest.raises(RuntimeError, match=NO_KERNEL):
        attention(
            q,
            k,
            v,
            mask=MASKS[mask],
            attn_bias=bias,
            causal=causal,
            dropout_p=dropout_p,
            backend="fused",
        ).numpy()


def _run_probe(code, **env):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, GLOG_minloglevel="0", **env),
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("is_global", [False, True])
def test_cuda_layer_norm_reaches_the_kernel(affine, is_global):
    """Forced onto CPU tensors, the fused LayerNorm passes every check and stops only in OneFlow's
    CPU layer_norm kernel (a fatal "TODO"), i.e. where the CUDA kernel would run (our CPU kernels
    off: they replace that kernel)."""
    code = f"""
        import oneflow as flow
        import libai_vit
        from libai_vit.layers import norm
        norm.device_type = lambda x: "cuda"
        x, w, b = flow.randn(2, 5, 8), flow.ones(8), flow.zeros(8)
        if {is_global}:
            p = flow.placement("cpu", [0])
            x = x.to_global(placement=p, sbp=flow.sbp.split(0))
            w, b = (t.to_global(placement=p, sbp=flow.sbp.broadcast) for t in (w, b))
        y = norm.layer_norm(x, w if {affine} else None, b if {affine} else None, 1e-6)
        y.numpy()
        print("no abort")
    """
    rc, out = _run_probe(code, LIBAI_VIT_KERNELS="0")
    assert rc != 0 and "layer_norm_cpu_kernel.cpp" in out and "TODO" in out, out[-3000:]
    assert "Check failed" not in out.split("layer_norm_cpu_kernel.cpp")[0], out[-3000:]


def test_dropout_generator_choice():
    """Global tensors draw from a CPU generator whatever their placement (OneFlow 0.9's global rand
    requires one); local tensors from one of their own device, kept and reseeded per block."""
    cuda_global = SimpleNamespace(is_global=True, placement=SimpleNamespace(type="cuda"))
    cuda_local = SimpleNamespace(is_global=False, device=SimpleNamespace(type="cuda", index=1))
    assert flash.generator_device(cuda_global) == "cpu"
    assert flash.generator_device(cuda_local) == "cuda:1"
    x = flow.zeros(3, 4)
    gen = flash.block_generator(x, 5)
    first = flow.rand(3, 4, generator=gen)
    assert flash.block_generator(x, 5) is gen
    assert flow.equal(flow.rand(3, 4, generator=gen), first)  # reseeded: the same block mask again


def test_forced_cuda_local_dropout_asks_for_a_cuda_generator():
    """The local CUDA branch builds a CUDA generator (here it aborts for want of a driver, which
    shows the branch got there with valid arguments)."""
    code = """
        import oneflow as flow
        from libai_vit.layers import flash
        flash.generator_device = lambda t: "cuda:0"
        flash.block_generator(flow.zeros(2), 3)
    """
    rc, out = _run_probe(code)
    assert rc != 0 and "MakeCUDAGenerator" in out, out[-3000:]


def test_flash_masking_is_finite_in_fp16():
    """The additive mask and the causal mask are built in the scores' dtype: in fp16 -1e30 * 0 was
    NaN (-inf * 0). fp16 add/mul/triu have CPU kernels, so this runs here; bf16 keeps -1e30 (its
    range is fp32's) but lacks CPU mul kernels."""
    keep = flow.rand(B, 1, Q, K) > 0.5
    mask_add = keep.logical_not().to(flow.float16) * flash.masked(flow.float16)
    scores = flow.randn(B, H, Q, K).to(flow.float16) * 8
    for masked_scores in (
        scores + mask_add,
        scores
        + mask_add
        + flow.ones(Q, K, dtype=flow.float16).triu(1) * flash.masked(flow.float16),
    ):
        assert bool(flow.isfinite(masked_scores.to(flow.float32)).all())
    gap = (scores.to(flow.float32) - (scores + mask_add).to(flow.float32))[
        keep.logical_not().expand(B, H, Q, K)
    ]
    assert float(gap.min()) > 1e4  # exp(-1e4) = 0: masked keys still get no weight
    assert flash.masked(flow.float32) == flash.masked(flow.bfloat16) == flash.MASKED
