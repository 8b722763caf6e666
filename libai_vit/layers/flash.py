"""Blockwise ("flash") attention: exact softmax attention in O(N·d) activation memory.

Forward walks query blocks x key blocks (of a group of heads at a time where that lengthens the
blocks' rows), keeps only the output and each row's logsumexp; backward recomputes every block
from q, k, v and those. It is a custom `flow.autograd.Function`, which works
in eager mode and inside nn.Graph (OneFlow 0.9 traces the Python backward into the graph), on local
and on global tensors (batch and heads may be split; the sequence dims must not be).

Written for OneFlow's CPU kernels, measured: the fused softmax is ~4x faster than `exp`, and an
elementwise op that broadcasts along the last dim costs ~10x a same-shape one. So a block's
probabilities come from `softmax` (normalised within the block) and are rescaled per row only on
small (rows x head_dim) tensors; `dP - D` comes out of one matmul with an extra column.

Dropout keeps no mask: each block's mask is drawn from a generator seeded by (call seed, block), in
forward and again in backward. In nn.Graph every draw becomes an op with a fixed seed whose state
advances once per step, so forward and backward still agree and masks change from step to step.

A row with no key to attend to (fully masked) is undefined: math gives NaN, flash a finite value.
"""

from dataclasses import dataclass
from functools import partial
from typing import Optional

import oneflow as flow
from oneflow._oneflow_internal.autograd import AutogradFunctionBase

from libai_vit.parallel import replicate_like

# Masked scores are finite: a block whose row is fully masked must give a finite block logsumexp
# (it then weighs exp(-1e30) = 0 against the others) instead of NaN. fp16 tops out at 65504, where
# -1e30 is -inf and -inf * 0 (an allowed position) is NaN: there -2^14, which mask + causal + bias
# still leave finite and exp() still turns into 0.
MASKED = -1e30
MASKED_FP16 = -(2.0**14)
# Default blocks, measured on a 2-core CPU (results/attention/README.md): a key block as long as
# 4096 keeps sequences up to 4096 in one key block (no logsumexp bookkeeping). A block of scores
# holds about BLOCK_SCORES floats (two are alive at once): as many query rows of one head as fit
# (at least BLOCK_Q), then as many heads as fit. Long rows of few heads beat short rows of many:
# dK and dV come from matmuls over the block's rows, slow when those are few.
BLOCK_Q = 128
BLOCK_K = 4096
BLOCK_SCORES = 512 * 4096


@dataclass
class _Config:
    scale: float
    causal: bool
    dropout_p: float
    seed: int
    block_q: int
    block_k: int
    head_groups: list  # [(h0, h1), ...]: the heads each block holds
    # MASKED where the mask forbids, else 0; 4-d, broadcastable to the scores
    mask_add: Optional[flow.Tensor]
    bias_grad: bool

    def several_key_blocks(self, k_len):
        """With one key block a block's softmax is final: no logsumexp, no rescaling."""
        return k_len > self.block_k

    def key_blocks(self, i0, i1, q_len, k_len):
        """(index, start, end, needs_causal_mask) of the key blocks query rows [i0, i1) see."""
        off = k_len - q_len  # causal: row r sees keys <= r + off (aligned to the last key)
        blocks = []
        for j, j0 in enumerate(range(0, k_len, self.block_k)):
            j1 = min(j0 + self.block_k, k_len)
            if self.causal and j0 > i1 - 1 + off:
                continue  # every row of the block is after its last visible key
            blocks.append((j, j0, j1, self.causal and j1 - 1 > i0 + off))
        # rows that see no key at all still get one (fully masked) block: finite, not empty
        return blocks or [(0, 0, min(self.block_k, k_len), True)]


def flash_attention(
    q,
    k,
    v,
    mask=None,
    attn_bias=None,
    causal=False,
    dropout_p=0.0,
    scale=None,
    block_q=None,
    block_k=None,
):
    """softmax(q k^T * scale + attn_bias, masked) v, blockwise; `mask` True = may attend.

    Blocks default to the module's BLOCK_* settings, read at call time so they can be tuned."""
    block_k = block_k or BLOCK_K
    batch, heads, q_len = q.shape[0], q.shape[1], q.shape[-2]
    keys = min(block_k, k.shape[-2])
    rows_all_heads = max(BLOCK_Q, BLOCK_SCORES // (batch * heads * keys))
    rows_one_head = min(q_len, max(BLOCK_Q, BLOCK_SCORES // (batch * keys)))
    # heads are grouped where that at least doubles the rows (not at short sequences of a large
    # batch: more, smaller ops) and a group is a plain slice: not on global tensors (heads may be
    # split over ranks), nor with masks, biases or dropout (their blocks are indexed by rows)
    grouped = (
        rows_one_head >= 2 * min(rows_all_heads, q_len)
        and not q.is_global
        and mask is None
        and attn_bias is None
        and not dropout_p
    )
    block_q = block_q or (rows_one_head if grouped else rows_all_heads)
    per_group = max(1, BLOCK_SCORES // (batch * block_q * keys)) if grouped else heads
    cfg = _Config(
        scale=q.shape[-1] ** -0.5 if scale is None else float(scale),
        causal=causal,
        dropout_p=float(dropout_p),
        seed=_call_seed(q) if dropout_p > 0 else 0,
        block_q=block_q,
        block_k=block_k,
        head_groups=[(h0, min(h0 + per_group, heads)) for h0 in range(0, heads, per_group)],
        mask_add=None
        if mask is None
        else replicate_like(_as_4d(mask), q).logical_not().to(q.dtype) * masked(q.dtype),
        bias_grad=attn_bias is not None and attn_bias.requires_grad,
    )
    inputs = (q, k, v) if attn_bias is None else (q, k, v, replicate_like(_as_4d(attn_bias), q))
    return AutogradFunctionBase.apply(
        "FlashAttention",
        partial(FlashAttentionFunction.forward, cfg=cfg),
        partial(FlashAttentionFunction.backward, cfg=cfg),
        *inputs,
    )


class FlashAttentionFunction(flow.autograd.Function):
    """Inputs (q, k, v[, attn_bias]); the non-tensor settings travel in `cfg` (flash_attention)."""

    @staticmethod
    def forward(ctx, q, k, v, bias=None, *, cfg):
        outs, lses = [], []
        for h0, h1 in cfg.head_groups:
            out_h, lse_h = _forward(cfg, *(_heads(t, h0, h1) for t in (q, k, v)), bias)
            outs.append(out_h)
            lses.append(lse_h)
        out, lse = _cat(outs, 1), (None if lses[0] is None else _cat(lses, 1))
        ctx.save_for_backward(
            q, k, v, out, *([] if lse is None else [lse]), *([] if bias is None else [bias])
        )
        return out

    @staticmethod
    def backward(ctx, d_out, *, cfg):
        q, k, v, out, *rest = ctx.saved_tensors
        lse = rest.pop(0) if cfg.several_key_blocks(k.shape[-2]) else None
        bias = rest[0] if rest else None
        grads = []
        for h0, h1 in cfg.head_groups:
            tensors = (q, k, v, out, lse, d_out)
            grads.append(_backward(cfg, *(_heads(t, h0, h1) for t in tensors), bias))
        return tuple(_cat(g, 1) for g in zip(*grads))


def _forward(cfg, q, k, v, bias):
    """Output and (with several key blocks) row logsumexp of one group of heads."""
    q_len, k_len = q.shape[-2], k.shape[-2]
    outs, lses = [], []
    for bi, i0 in enumerate(range(0, q_len, cfg.block_q)):
        i1 = min(i0 + cfg.block_q, q_len)
        q_i = _rows_of(q, i0, i1)
        o_blocks, lse_blocks = [], []
        for bj, j0, j1, causal_blk in cfg.key_blocks(i0, i1, q_len, k_len):
            k_j = _rows_of(k, j0, j1)
            s = _scores(cfg, q_i, k_j, bias, i0, i1, j0, j1, q_len, k_len, causal_blk)
            p = flow.softmax(s, dim=-1)
            if cfg.several_key_blocks(k_len):  # else the softmax is the answer, no logsumexp needed
                lse_blocks.append(_block_lse(s, p))
            if cfg.dropout_p > 0:
                p = flow.masked_fill(p, _dropped(cfg, s, bi, bj), 0.0)
            del s
            o_blocks.append(flow.matmul(p, _rows_of(v, j0, j1)))
            del p  # else the next block's softmax is allocated while this one still lives
        out_i, lse_i = _combine(o_blocks, lse_blocks)
        if cfg.dropout_p > 0:
            out_i = out_i * (1.0 / (1.0 - cfg.dropout_p))
        outs.append(out_i)
        lses.append(lse_i)
    return _cat(outs, 2), (None if lses[0] is None else _cat(lses, 2))


def _backward(cfg, q, k, v, out, lse, d_out, bias):
    """Grads of q, k, v (and the bias) of one group of heads."""
    q_len, k_len = q.shape[-2], k.shape[-2]
    keep_scale = 1.0 / (1.0 - cfg.dropout_p)
    d_row = (d_out * out).sum(-1, keepdim=True)  # D_i = sum_j P_ij dP_ij = rowsum(dO * O)
    # [dO, -D] @ [V, 1]^T = dP - D in one matmul (a broadcast subtraction costs ~10x more here)
    v_aug = flow.cat([v, flow.ones_like(v[..., :1])], dim=-1)
    dq_blocks, dk, dv, dbias = [], {}, {}, {}
    for bi, i0 in enumerate(range(0, q_len, cfg.block_q)):
        i1 = min(i0 + cfg.block_q, q_len)
        q_i, do_i, d_i = _rows_of(q, i0, i1), _rows_of(d_out, i0, i1), d_row[:, :, i0:i1]
        do_aug = flow.cat([do_i, -d_i], dim=-1)
        dq_i = None
        for bj, j0, j1, causal_blk in cfg.key_blocks(i0, i1, q_len, k_len):
            k_j, v_j = _rows_of(k, j0, j1), _rows_of(v, j0, j1)
            s = _scores(cfg, q_i, k_j, bias, i0, i1, j0, j1, q_len, k_len, causal_blk)
            y = flow.softmax(s, dim=-1)  # P = c * y, c = exp(lse_block - lse) per row
            c = None if lse is None else flow.exp(_block_lse(s, y) - lse[:, :, i0:i1])
            dropped = _dropped(cfg, s, bi, bj) if cfg.dropout_p > 0 else None
            del s  # at most two (rows x keys) blocks alive at once from here
            if dropped is None:
                # dP - D before dV: it takes the scores' freed block; a (keys x head_dim) grad
                # would split that block, and the allocator (which keeps what it once held)
                # then needs a new one for each block of scores, growing call after call
                dp = flow.matmul(do_aug, _rows_of(v_aug, j0, j1), transpose_b=True)
                dv_j = flow.matmul(y, _rows(do_i, c), transpose_a=True)
                g = y.mul_(dp)  # in place: a fresh block costs an allocation's page faults
            else:
                dv_j = flow.matmul(
                    flow.masked_fill(y, dropped, 0.0),
                    _rows(do_i, c, keep_scale),
                    transpose_a=True,
                )
                dp = flow.masked_fill(
                    flow.matmul(do_i, v_j, transpose_b=True, alpha=keep_scale), dropped, 0.0
                )
                g = y.mul_(dp - _rows(flow.ones_like(dp), d_i))
            del y  # g is dS / c
            if c is None:  # the scale rides on the matmuls: no elementwise pass
                dq_ij = flow.matmul(g, k_j, alpha=cfg.scale)
                dk_j = flow.matmul(g, q_i, transpose_a=True, alpha=cfg.scale)
            else:
                dq_ij = _rows(flow.matmul(g, k_j), c, cfg.scale)
                dk_j = flow.matmul(g, _rows(q_i, c, cfg.scale), transpose_a=True)
            dq_i = _accumulate(dq_i, dq_ij)
            dk[bj] = _accumulate(dk.get(bj), dk_j)
            dv[bj] = _accumulate(dv.get(bj), dv_j)
            if cfg.bias_grad:
                _add_bias_grad(dbias, bias, g if c is None else _rows(g, c), bi, bj)
            # held till here so that no small grad splits their blocks (see dP above), and
            # freed, with this block's grads, before the next block's take their places
            del g, dp, dq_ij, dk_j, dv_j
        dq_blocks.append(dq_i)
    dq = _cat(dq_blocks, 2)
    dk = _cat_blocks(dk, k, cfg.block_k)
    dv = _cat_blocks(dv, v, cfg.block_k)
    if bias is None:
        return dq, dk, dv
    return dq, dk, dv, (_bias_grad(dbias, bias, q_len, k_len, cfg) if cfg.bias_grad else None)


def _heads(t, h0, h1):
    """Heads [h0, h1) of a (batch, heads, ...) tensor; itself (or None) when that is all of it."""
    return t if t is None or (h0 == 0 and h1 >= t.shape[1]) else t[:, h0:h1]


def _cat(parts, dim):
    return flow.cat(parts, dim=dim) if len(parts) > 1 else parts[0]


def _rows_of(t, i0, i1):
    """Rows [i0, i1) of dim 2; the tensor itself when that is all of it (no slice, no copy)."""
    return t if i0 == 0 and i1 >= t.shape[2] else t[:, :, i0:i1]


def _accumulate(total, part):
    """total + part, in place into the block's own first partial sum (no new buffer per block)."""
    return part if total is None else total.add_(part)


def _scores(cfg, q_i, k_j, bias, i0, i1, j0, j1, q_len, k_len, causal_blk):
    # masks are added (MASKED swamps any score), not masked_fill'ed: masked_fill with a replicated
    # mask turns head-split global scores into replicated ones, and is ~8x slower on CPU
    s = flow.matmul(q_i, k_j, transpose_b=True, alpha=cfg.scale)
    if bias is not None:
        s = s + _block(bias, i0, i1, j0, j1)
    if cfg.mask_add is not None:
        s = s + _block(cfg.mask_add, i0, i1, j0, j1)
    if causal_blk:
        # key j0+c is after row i0+r's last visible key i0+r+off  <=>  c > r + (i0 - j0 + off)
        after = ones_beside((i1 - i0, j1 - j0), s).triu(i0 - j0 + k_len - q_len + 1)
        s = s + after * masked(s.dtype)
    return s


def _block_lse(s, p):
    """Row logsumexp of a block from its softmax: at the row max m, p = exp(m - lse)."""
    return flow.amax(s, dim=-1, keepdim=True) - flow.log(flow.amax(p, dim=-1, keepdim=True))


def _combine(o_blocks, lse_blocks):
    """Output and logsumexp of a query block from its key blocks' (softmax @ v, logsumexp)."""
    if len(o_blocks) == 1:
        return o_blocks[0], (lse_blocks[0] if lse_blocks else None)
    lse_all = flow.cat(lse_blocks, dim=-1)
    top = flow.amax(lse_all, dim=-1, keepdim=True)
    lse = top + flow.log(flow.exp(lse_all - top).sum(-1, keepdim=True))
    weights = flow.exp(lse_all - lse)
    out = None
    for j, o in enumerate(o_blocks):
        part = _rows(o, weights[..., j : j + 1])
        out = part if out is None else out + part
    return out, lse


def _rows(t, c, factor=1.0):
    """t * c per row (c: rows x 1, or None) * factor.

    c is first spread over the columns by a rank-1 matmul: a broadcasting multiply along the last
    dim costs ~20x a same-shape one on OneFlow's CPU kernels, the matmul almost nothing."""
    if c is None:
        return t if factor == 1.0 else t * factor
    return t * flow.matmul(
        c * factor if factor != 1.0 else c, ones_beside((1, 1, 1, t.shape[-1]), t)
    )


def masked(dtype):
    """The score added where attention is forbidden, finite in `dtype` (see MASKED)."""
    return MASKED_FP16 if dtype == flow.float16 else MASKED


def _dropped(cfg, s, bi, bj):
    """The dropout mask of block (bi, bj): the same in forward and backward, new for every call."""
    gen = block_generator(s, (cfg.seed * 1_000_003 + bi * 65_537 + bj) % (2**63))
    if s.is_global:
        u = flow.rand(*s.shape, placement=s.placement, sbp=s.sbp, generator=gen)
    else:
        u = flow.rand(*s.shape, device=s.device, generator=gen)
    return u < cfg.dropout_p


_generators = {}


def generator_device(t):
    """The device of the generator that draws `t`'s dropout: a global tensor's is the CPU whatever
    its placement (OneFlow 0.9's global `rand` takes the generator's CPU implementation to derive
    each rank's seed, `gen->Get<CPUGeneratorImpl>(0)` in random_functor.cpp, and fails on a CUDA
    one); a local tensor's is its own device."""
    if t.is_global:
        return "cpu"
    return t.device.type if t.device.type == "cpu" else f"{t.device.type}:{t.device.index}"


def block_generator(t, seed):
    """A generator for `t`'s device seeded with `seed`: one per device, reseeded per block (making a
    CUDA generator allocates and initialises curand states; reseeding only re-initialises them)."""
    device = generator_device(t)
    if device not in _generators:
        _generators[device] = flow.Generator(device=device)
    gen = _generators[device]
    gen.manual_seed(seed)
    return gen


_trace_calls = {}


def _call_seed(q):
    """A fresh dropout seed per call, reproducible from flow.manual_seed.

    Traced into nn.Graph it is a constant per call site that the graph's ops then advance. Call
    sites are counted per graph, so a graph rebuilt after reseeding (checkpoint boundary, resume)
    gets the same seeds as a fresh process building its first graph: a resumed run draws the same
    masks."""
    if q.is_lazy:
        job = flow._oneflow_internal.JobBuildAndInferCtx_GetCurrentJobName()
        _trace_calls[job] = _trace_calls.get(job, 0) + 1
        return (flow.default_generator.initial_seed() + _trace_calls[job]) % (2**62)
    return int(flow.randint(0, 2**62, (1,), generator=flow.default_generator).item())


def _block(t, i0, i1, j0, j1):
    """The (i0:i1, j0:j1) block of a 4-d tensor broadcastable to the scores (size-1 dims stay)."""
    rows = slice(i0, i1) if t.shape[-2] > 1 else slice(None)
    cols = slice(j0, j1) if t.shape[-1] > 1 else slice(None)
    return t[:, :, rows, cols]


def _as_4d(t):
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t


def _add_bias_grad(dbias, bias, ds, bi, bj):
    """Accumulate dS of block (bi, bj) into the grad of `bias`, summed over its broadcast dims."""
    dims = [d for d in range(4) if bias.shape[d] == 1 and ds.shape[d] > 1]
    if dims:
        ds = ds.sum(dim=dims, keepdim=True)
    key = (bi if bias.shape[2] > 1 else 0, bj if bias.shape[3] > 1 else 0)
    dbias[key] = ds if key not in dbias else dbias[key] + ds


def _bias_grad(dbias, bias, q_len, k_len, cfg):
    rows = []
    for bi, i0 in enumerate(range(0, q_len if bias.shape[2] > 1 else 1, cfg.block_q)):
        i1 = min(i0 + cfg.block_q, q_len) if bias.shape[2] > 1 else 1
        row = []
        for bj, j0 in enumerate(range(0, k_len if bias.shape[3] > 1 else 1, cfg.block_k)):
            j1 = min(j0 + cfg.block_k, k_len) if bias.shape[3] > 1 else 1
            # blocks skipped as fully causal-masked have no gradient
            row.append(
                dbias[(bi, bj)] if (bi, bj) in dbias else flow.zeros_like(bias[:, :, i0:i1, j0:j1])
            )
        rows.append(flow.cat(row, dim=3) if len(row) > 1 else row[0])
    return flow.cat(rows, dim=2) if len(rows) > 1 else rows[0]


def _cat_blocks(blocks, like, block_k):
    """Key-block grads in order; a key block no query saw (causal) gets zeros."""
    parts = []
    for bj, j0 in enumerate(range(0, like.shape[2], block_k)):
        parts.append(blocks[bj] if bj in blocks else flow.zeros_like(like[:, :, j0 : j0 + block_k]))
    return flow.cat(parts, dim=2) if len(parts) > 1 else parts[0]


def ones_beside(shape, ref, dtype=None):
    """Ones of `shape` where `ref` lives (replicated on its placement if global). Built there
    directly: nn.Graph cannot turn a local tensor into a global one."""
    dtype = ref.dtype if dtype is None else dtype
    if ref.is_global:
        return flow.ones(
            *shape, dtype=dtype, placement=ref.placement, sbp=[flow.sbp.broadcast] * len(ref.sbp)
        )
    return flow.ones(*shape, dtype=dtype, device=ref.device)
