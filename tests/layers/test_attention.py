"""Attention backends: flash matches math (forward and grads), dropout, dispatch, the ViT with
flash, nn.Graph, and (slow) global tensors with heads split over 2 processes."""

import logging
import textwrap

import numpy as np
import oneflow as flow
import pytest

from libai_vit.layers.attention import FlashAttention, attention, sdp_kernel, select_backend
from libai_vit.layers.flash import flash_attention

from conftest import launch_script, tiny_vit

TOL = 1e-5


def _inputs(b, h, q_len, k_len, d, use_mask, use_bias, causal, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((b, h, n, d)).astype(np.float32) for n in (q_len, k_len, k_len))
    mask = bias = None
    if use_mask:
        keep = rng.random((b, 1, q_len, k_len)) > 0.4
        # every row keeps its last visible key: a row with no key is undefined (NaN in math)
        last = np.arange(q_len) + (k_len - q_len) if causal else np.full(q_len, k_len - 1)
        keep[:, :, np.arange(q_len), last] = True
        mask = flow.tensor(keep)
    if use_bias:
        bias = rng.standard_normal((1, h, q_len, k_len)).astype(np.float32)
    d_out = rng.standard_normal((b, h, q_len, d)).astype(np.float32)
    return q, k, v, mask, bias, d_out


def _run(fn, q, k, v, mask, bias, d_out, **kw):
    """Output and grads of (q, k, v[, bias]) under upstream grad d_out."""
    leaves = [flow.tensor(x, requires_grad=True) for x in (q, k, v)]
    b = None if bias is None else flow.tensor(bias, requires_grad=True)
    out = fn(*leaves, mask=mask, attn_bias=b, **kw)
    out.backward(flow.tensor(d_out))
    return (
        [out.numpy()] + [t.grad.numpy() for t in leaves] + ([] if b is None else [b.grad.numpy()])
    )


def _math(q, k, v, **kw):
    return attention(q, k, v, backend="math", **kw)


# small blocks so the grid crosses several query and key blocks, with ragged last blocks
@pytest.mark.parametrize("q_len,k_len", [(37, 37), (19, 45), (45, 45)])
@pytest.mark.parametrize("d", [8, 24])
@pytest.mark.parametrize(
    "use_mask,use_bias,causal",
    [
        (False, False, False),
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (True, True, True),
    ],
)
def test_flash_matches_math_blockwise(q_len, k_len, d, use_mask, use_bias, causal):
    args = _inputs(2, 3, q_len, k_len, d, use_mask, use_bias, causal)
    ref = _run(_math, *args, causal=causal)
    got = _run(flash_attention, *args, causal=causal, block_q=8, block_k=16)
    for name, a, b in zip(["out", "dq", "dk", "dv", "dbias"], ref, got):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=TOL, err_msg=name)


@pytest.mark.parametrize("d", [16, 64])
def test_flash_backend_matches_math_default_blocks(d):
    """Through `attention`, default blocks (one key block at these lengths), with scale and a
    key-padding mask."""
    args = _inputs(2, 4, 50, 50, d, True, True, False, seed=1)
    ref = _run(_math, *args, scale=0.3)
    got = _run(lambda *a, **kw: attention(*a, backend="flash", **kw), *args, scale=0.3)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_head_groups_match_math(monkeypatch, causal):
    """Without mask, bias or dropout a block holds as many heads as BLOCK_SCORES allows: here groups
    of 2 of 5 heads (the last ragged), each over 2 query blocks (the last ragged)."""
    from libai_vit.layers import flash

    monkeypatch.setattr(flash, "BLOCK_SCORES", 2 * 32 * 40 * 2)  # batch x rows x keys x 2 heads
    monkeypatch.setattr(flash, "BLOCK_Q", 8)  # all 5 heads would get 12 rows: grouping pays
    groups = []
    forward = flash._forward
    monkeypatch.setattr(
        flash, "_forward", lambda cfg, q, *a: groups.append(q.shape[1]) or forward(cfg, q, *a)
    )
    args = _inputs(2, 5, 40, 40, 16, False, False, causal, seed=3)
    ref = _run(_math, *args, causal=causal)
    got = _run(flash_attention, *args, causal=causal, block_q=32)
    assert groups == [2, 2, 1]
    for name, a, b in zip(["out", "dq", "dk", "dv"], ref, got):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=TOL, err_msg=name)


def test_bias_broadcast_over_queries_gets_summed_grad():
    args = list(_inputs(1, 2, 21, 33, 8, False, True, False, seed=2))
    args[4] = args[4][:, :, :1]  # (1, h, 1, k): one bias row for every query
    ref = _run(_math, *args)
    got = _run(flash_attention, *args, block_q=8, block_k=16)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=TOL)


def _dropout_out(q, k, v, p, seed):
    flow.manual_seed(seed)
    return flash_attention(q, k, v, dropout_p=p, block_q=16, block_k=32)


def test_dropout_reproducible_keeps_one_minus_p_and_backward_uses_same_mask():
    n, p = 64, 0.25
    zeros = flow.zeros(1, 2, n, 8)
    ones = flow.ones(1, 2, n, 8)
    # q = k = 0: uniform weights 1/n, v = 1: each output is the kept fraction / (1 - p)
    out = _dropout_out(zeros, zeros, ones, p, seed=3).numpy()
    np.testing.assert_array_equal(out, _dropout_out(zeros, zeros, ones, p, seed=3).numpy())
    assert not np.array_equal(out, _dropout_out(zeros, zeros, ones, p, seed=4).numpy())
    kept = out[..., 0].mean() * (1 - p)
    assert abs(kept - (1 - p)) < 0.02, kept

    # the gradient is that of the function the forward computed: a directional finite difference
    rng = np.random.default_rng(5)
    q, k, v, direction = (
        flow.tensor(rng.standard_normal((1, 2, 40, 8)).astype(np.float32)) for _ in range(4)
    )
    w = flow.tensor(rng.standard_normal((1, 2, 40, 8)).astype(np.float32))
    q_leaf = q.clone().requires_grad_()
    (_dropout_out(q_leaf, k, v, p, seed=6) * w).sum().backward()
    analytic = float((q_leaf.grad * direction).sum().numpy())
    eps = 1e-2
    plus = float((_dropout_out(q + eps * direction, k, v, p, seed=6) * w).sum().numpy())
    minus = float((_dropout_out(q - eps * direction, k, v, p, seed=6) * w).sum().numpy())
    assert abs((plus - minus) / (2 * eps) - analytic) < 1e-2 * max(1.0, abs(analytic))


def test_fused_on_cpu_raises_clear_error():
    q = flow.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="fused.*CUDA.*backend='flash'"):
        attention(q, q, q, backend="fused")


def test_unknown_backend_raises():
    q = flow.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="not one of"):
        attention(q, q, q, backend="xformers")


def test_auto_dispatch(caplog):
    short, long = flow.randn(1, 2, 16, 4), flow.randn(1, 2, 2048, 4)
    assert select_backend(long, long, return_weights=True) == "math"
    assert select_backend(short, short) == "math"
    assert select_backend(long, long) == "flash"
    with sdp_kernel(enable_flash=False):
        assert select_backend(long, long) == "math"
    with sdp_kernel(enable_math=False):
        assert select_backend(short, short) == "flash"
        with pytest.raises(ValueError, match="no enabled attention backend"):
            select_backend(short, short, return_weights=True)
    with caplog.at_level(logging.DEBUG, logger="libai_vit.layers.attention"):
        out, weights = attention(short, short, short, backend="auto", return_weights=True)
    assert tuple(weights.shape) == (1, 2, 16, 16)
    assert "auto -> math" in caplog.text
    with pytest.raises(ValueError, match="never forms the weights"):
        attention(short, short, short, backend="flash", return_weights=True)


def test_auto_matches_math_where_it_picks_flash():
    """What makes "auto" a safe default: on CPU it is math, or flash (from 1024 keys) within
    1e-5."""
    args = _inputs(1, 2, 1100, 1100, 8, True, False, False, seed=8)
    assert select_backend(flow.tensor(args[0]), flow.tensor(args[1])) == "flash"
    ref = _run(_math, *args)
    got = _run(lambda *a, **kw: attention(*a, backend="auto", **kw), *args)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=TOL)


def test_flash_attention_module():
    q, k, v, _, bias, _ = _inputs(2, 2, 9, 12, 8, False, True, True)
    q, k, v, bias = map(flow.tensor, (q, k, v, bias))
    module = FlashAttention(causal=True)
    keep = module.get_mask(9, 12, "cpu")
    assert keep.shape == (9, 12) and bool(keep[0, 3]) and not bool(keep[0, 4])
    ref = attention(q, k, v, mask=keep, attn_bias=bias, backend="math")
    np.testing.assert_allclose(module(q, k, v, attn_bias=bias).numpy(), ref.numpy(), atol=TOL)
    np.testing.assert_allclose(
        FlashAttention(causal=True, flash=False)(q, k, v, attn_bias=bias).numpy(),
        ref.numpy(),
        atol=TOL,
    )


def _batch():
    rng = np.random.default_rng(7)
    return (
        flow.tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32)),
        flow.tensor(rng.integers(0, 10, 4), dtype=flow.int64),
    )


def test_vit_flash_trains_like_math():
    images, labels = _batch()
    runs = {}
    for backend in ("math", "flash"):
        model = tiny_vit(attn_backend=backend)
        model.train()
        opt = flow.optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for _ in range(3):
            loss = model(images, labels)["losses"]
            opt.zero_grad()
            loss.backward()
            losses.append(float(loss.numpy()))
            grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
            opt.step()
        runs[backend] = losses, grads
    np.testing.assert_allclose(runs["flash"][0], runs["math"][0], rtol=TOL, atol=TOL)
    for name, g in runs["math"][1].items():
        np.testing.assert_allclose(runs["flash"][1][name], g, rtol=TOL, atol=TOL, err_msg=name)


def test_flash_inside_nn_graph_matches_eager_math():
    """flow.autograd.Function (forward and the Python backward) is traced into nn.Graph in
    OneFlow 0.9."""
    images, labels = _batch()
    eager = tiny_vit(attn_backend="math")
    eager.train()
    opt_e = flow.optim.SGD(eager.parameters(), lr=0.1)
    graph_model = tiny_vit(attn_backend="flash")
    graph_model.train()
    opt_g = flow.optim.SGD(graph_model.parameters(), lr=0.1)

    class Step(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = graph_model
            self.add_optimizer(opt_g)

        def build(self, x, y):
            loss = self.model(x, y)["losses"]
            loss.backward()
            return loss

    step = Step()
    for _ in range(2):
        loss_e = eager(images, labels)["losses"]
        opt_e.zero_grad()
        loss_e.backward()
        opt_e.step()
        loss_g = step(
            images.to_global(placement=flow.placement("cpu", [0]), sbp=flow.sbp.split(0)),
            labels.to_global(placement=flow.placement("cpu", [0]), sbp=flow.sbp.split(0)),
        )
        np.testing.assert_allclose(
            float(loss_g.to_local().numpy()), float(loss_e.numpy()), rtol=TOL, atol=TOL
        )


def test_flash_head_groups_inside_nn_graph(monkeypatch):
    """Head groups (local tensors) traced into nn.Graph: one SGD step on q, k, v as parameters
    lands where eager math's does."""
    from libai_vit.layers import flash

    monkeypatch.setattr(flash, "BLOCK_SCORES", 40 * 40 * 2)  # all rows x keys x 2 heads
    monkeypatch.setattr(flash, "BLOCK_Q", 8)
    q, k, v, _, _, d_out = _inputs(1, 5, 40, 40, 16, False, False, False, seed=4)

    class QKV(flow.nn.Module):
        def __init__(self, backend):
            super().__init__()
            self.q, self.k, self.v = (flow.nn.Parameter(flow.tensor(x)) for x in (q, k, v))
            self.backend = backend

        def forward(self):
            out = attention(self.q, self.k, self.v, backend=self.backend)
            return (out * flow.tensor(d_out)).sum()

    eager, traced = QKV("math"), QKV("flash")
    opt_e, opt_g = (flow.optim.SGD(m.parameters(), lr=0.1) for m in (eager, traced))

    class Step(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = traced
            self.add_optimizer(opt_g)

        def build(self):
            loss = self.model()
            loss.backward()
            return loss

    groups = []
    forward = flash._forward
    monkeypatch.setattr(
        flash, "_forward", lambda cfg, q, *a: groups.append(q.shape[1]) or forward(cfg, q, *a)
    )
    loss_g = Step()()
    loss_e = eager()
    loss_e.backward()
    opt_e.step()
    assert groups == [2, 2, 1]
    np.testing.assert_allclose(loss_g.numpy(), loss_e.numpy(), rtol=TOL, atol=TOL)
    for a, b in zip(eager.parameters(), traced.parameters()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=TOL, atol=TOL)


_GLOBAL_CHECK = textwrap.dedent('''
    """2 processes: flash on global tensors (heads split, then batch split; eager and nn.Graph)
    equals local math."""
    import numpy as np
    import oneflow as flow

    import libai_vit  # noqa: F401
    from libai_vit.layers.attention import attention
    from libai_vit.layers.flash import flash_attention

    rng = np.random.default_rng(0)
    b, h, n, d = 2, 4, 37, 8
    q, k, v, d_out = (rng.standard_normal((b, h, n, d)).astype(np.float32) for _ in range(4))
    bias = rng.standard_normal((1, h, n, n)).astype(np.float32)
    keep = rng.random((b, 1, n, n)) > 0.4
    keep[:, :, np.arange(n), np.arange(n)] = True  # the diagonal: every causal row keeps a key
    placement = flow.placement("cpu", [0, 1])

    def run(fn, as_tensor):
        leaves = [as_tensor(x).requires_grad_() for x in (q, k, v, bias)]
        out = fn(*leaves[:3], mask=as_tensor(keep), attn_bias=leaves[3], causal=True)
        out.backward(as_tensor(d_out))
        return [out] + [t.grad for t in leaves]

    def math_backend(*a, **kw):
        return attention(*a, backend="math", **kw)

    ref = [t.numpy() for t in run(math_backend, flow.tensor)]
    for split in (1, 0):  # heads over ranks (tensor parallel), then batch (data parallel)
        def as_global(x, split=split):
            t = flow.tensor(x).to_global(placement=placement, sbp=flow.sbp.broadcast)
            if x.ndim == 4 and x.shape[split] == q.shape[split]:
                return t.to_global(sbp=flow.sbp.split(split))
            return t
        got = run(lambda *a, **kw: flash_attention(*a, block_q=16, block_k=16, **kw), as_global)
        # no op inside flash gathers the split dim: output and q/k/v grads stay split
        assert all(t.sbp == (flow.sbp.split(split),) for t in got[:4]), [t.sbp for t in got[:4]]
        for name, a, g in zip(["out", "dq", "dk", "dv", "dbias"], ref, got):
            g = g.to_global(sbp=flow.sbp.broadcast).to_local().numpy()
            np.testing.assert_allclose(g, a, atol=1e-5, rtol=1e-5, err_msg=f"split({split}) {name}")
        # dropout: the same seed gives the same global result, on every rank
        qkv = [as_global(t) for t in (q, k, v)]
        flow.manual_seed(11)
        x = flash_attention(*qkv, dropout_p=0.3).to_global(sbp=flow.sbp.broadcast)
        flow.manual_seed(11)
        y = flash_attention(*qkv, dropout_p=0.3).to_global(sbp=flow.sbp.broadcast)
        np.testing.assert_array_equal(x.to_local().numpy(), y.to_local().numpy())

    # inside nn.Graph, heads split: q is a parameter, so SGD(lr=1) leaves q - dq behind
    class Q(flow.nn.Module):
        def __init__(self):
            super().__init__()
            self.q = flow.nn.Parameter(as_global(q, split=1))

        def forward(self, k, v, bias, mask):
            return flash_attention(
                self.q, k, v, mask=mask, attn_bias=bias, causal=True, block_q=16, block_k=16
            )

    module = Q()
    opt = flow.optim.SGD(module.parameters(), lr=1.0)

    class Step(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.module = module
            self.add_optimizer(opt)

        def build(self, k, v, bias, mask, d_out):
            out = self.module(k, v, bias, mask)
            (out * d_out).sum().backward()
            return out

    before = module.q.to_global(sbp=flow.sbp.broadcast).to_local().numpy()
    out = Step()(*[as_global(t, split=1) for t in (k, v, bias, keep, d_out)])
    after = module.q.to_global(sbp=flow.sbp.broadcast).to_local().numpy()
    out = out.to_global(sbp=flow.sbp.broadcast).to_local().numpy()
    np.testing.assert_allclose(out, ref[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(before - after, ref[1], atol=1e-5, rtol=1e-5)
    print("global flash ok on rank", flow.env.get_rank())
''')


@pytest.mark.slow
def test_flash_on_global_tensors_two_processes(tmp_path):
    script = tmp_path / "flash_global_check.py"
    script.write_text(_GLOBAL_CHECK)
    proc = launch_script(script, 2)
    assert proc.stdout.count("global flash ok") == 2, proc.stdout[-3000:]
