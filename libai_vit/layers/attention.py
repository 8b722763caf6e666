"""Scaled dot-product attention with selectable backends, on (batch, heads, seq, head_dim) tensors.

`attention(..., backend=...)` runs one of:
- "math": the reference (scores, softmax, matmul); the only one that can return the weights;
- "fused": OneFlow's fused scale-mask-softmax(-dropout) CUDA kernels; CUDA tensors only;
- "flash": blockwise attention with recomputation (libai_vit.layers.flash), O(N·d) activation
  memory;
- "auto": the best of those the `sdp_kernel` context allows for the device, shape and features
  asked.
Tensors may be local or global (batch split over data-parallel ranks, heads over tensor-parallel
ones).
"""

import contextlib
import contextvars
import logging
import math

import oneflow as flow
from oneflow import nn

from libai_vit.layers.flash import flash_attention, ones_beside
from libai_vit.parallel import device_type, replicate_like

BACKENDS = ("auto", "math", "fused", "flash")
# On CPU "auto" runs flash from this many keys on: below, math's N^2 activations are small and it is
# a little faster (flash adds the backward's recomputation); above, they dominate memory.
AUTO_FLASH_MIN_KEYS = 1024
logger = logging.getLogger(__name__)

_enabled = contextvars.ContextVar(
    "attention_backends", default=frozenset({"math", "fused", "flash"})
)


@contextlib.contextmanager
def sdp_kernel(enable_math=True, enable_fused=True, enable_flash=True):
    """Restrict which backends "auto" may pick (like torch.backends.cuda.sdp_kernel)."""
    chosen = {
        name
        for name, on in (("math", enable_math), ("fused", enable_fused), ("flash", enable_flash))
        if on
    }
    token = _enabled.set(frozenset(chosen))
    try:
        yield
    finally:
        _enabled.reset(token)


def math_attention(
    q,
    k,
    v,
    mask=None,
    attn_bias=None,
    causal=False,
    dropout_p=0.0,
    scale=None,
    return_weights=False,
):
    """The plain reference: scale, bias, mask, causal, softmax, dropout, matmul."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = flow.matmul(q, k, transpose_b=True, alpha=scale)
    if attn_bias is not None:
        scores = scores + replicate_like(attn_bias, scores)
    keep = _keep_mask(q, k, mask, causal, scores)
    if keep is not None:
        scores = flow.masked_fill(scores, keep.logical_not(), -math.inf)
    weights = flow.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = flow.nn.functional.dropout(weights, p=dropout_p, training=True)
    out = flow.matmul(weights, v)
    return (out, weights) if return_weights else out


def fused_attention(
    q,
    k,
    v,
    mask=None,
    attn_bias=None,
    causal=False,
    dropout_p=0.0,
    scale=None,
    return_weights=False,
):
    """Scale, mask, softmax (and dropout) in one OneFlow CUDA kernel; fully masked rows as math
    (NaN)."""
    if device_type(q) != "cuda":
        raise ValueError(
            f"attention backend 'fused' runs OneFlow's CUDA-only fused softmax kernels, but the "
            f"tensors are on {device_type(q)!r}: use backend='flash', 'math' or 'auto'"
        )
    if return_weights:
        raise ValueError(
            "attention backend 'fused' cannot return the weights: use backend='math' or 'auto'"
        )
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if attn_bias is None:
        scores, kernel_scale = flow.matmul(q, k, transpose_b=True), scale
    else:  # the bias is added after scaling, so the kernel must not scale again
        scores, kernel_scale = (
            flow.matmul(q, k, transpose_b=True, alpha=scale) + replicate_like(attn_bias, q),
            1.0,
        )
    keep = _keep_mask(q, k, mask, causal, scores)
    if keep is None:
        keep = ones_beside((q.shape[-2], k.shape[-2]), scores, dtype=flow.bool)
    keep = _fused_kernel_mask(keep, scores)
    if dropout_p > 0.0:
        weights = flow._C.fused_scale_mask_softmax_dropout(
            scores, keep, fill_value=-math.inf, scale=kernel_scale, p=dropout_p, training=True
        )
        weights = weights[0] if isinstance(weights, (tuple, list)) else weights
    else:
        weights = flow._C.fused_scale_mask_softmax(
            scores, keep, fill_value=-math.inf, scale=kernel_scale
        )
    return flow.matmul(weights, v)


def _flash(
    q,
    k,
    v,
    mask=None,
    attn_bias=None,
    causal=False,
    dropout_p=0.0,
    scale=None,
    return_weights=False,
):
    if return_weights:
        raise ValueError(
            "attention backend 'flash' never forms the weights: use backend='math' or 'auto'"
        )
    return flash_attention(
        q, k, v, mask=mask, attn_bias=attn_bias, causal=causal, dropout_p=dropout_p, scale=scale
    )


_IMPLS = {"math": math_attention, "fused": fused_attention, "flash": _flash}


def select_backend(q, k, return_weights=False):
    """What "auto" runs for these inputs, within the backends `sdp_kernel` enables."""
    enabled = _enabled.get()
    if return_weights:
        candidates = ["math"]  # only math forms the weights
    elif device_type(q) == "cuda":
        candidates = ["fused", "flash", "math"]
    elif k.shape[-2] >= AUTO_FLASH_MIN_KEYS:
        candidates = ["flash", "math"]
    else:
        candidates = ["math", "flash"]
    for name in candidates:
        if name in enabled:
            return name
    raise ValueError(
        f"no enabled attention backend can run this call (weights requested: {return_weights}, "
        f"device {device_type(q)!r}; enabled: {sorted(enabled)}): widen sdp_kernel(...)"
    )


def attention(
    q,
    k,
    v,
    mask=None,
    attn_bias=None,
    causal=False,
    dropout_p=0.0,
    scale=None,
    backend="auto",
    return_weights=False,
):
    """softmax(q k^T * scale + attn_bias, masked) v; (out, weights) if return_weights.

    `mask` is boolean, True = may attend; `mask` and `attn_bias` broadcast to (b, h, q_len, k_len);
    `causal` aligns to the last key (q is a suffix of k); `scale` defaults to head_dim ** -0.5.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        backend = select_backend(q, k, return_weights)
        logger.debug(
            "attention backend auto -> %s (device %s, q %s, k %s, weights %s)",
            backend,
            device_type(q),
            tuple(q.shape),
            tuple(k.shape),
            return_weights,
        )
    return _IMPLS[backend](
        q,
        k,
        v,
        mask=mask,
        attn_bias=attn_bias,
        causal=causal,
        dropout_p=dropout_p,
        scale=scale,
        return_weights=return_weights,
    )


class FlashAttention(nn.Module):
    """Attention as a module: `flash=True` runs the blockwise backend, otherwise the math one.

    `dropout` applies in training mode only. `get_mask(i, j)` is the causal mask for i queries over
    j keys (True = may attend, aligned to the last key), the convention of `mask` everywhere here.
    """

    def __init__(self, causal=False, dropout=0.0, flash=True):
        super().__init__()
        self.causal = causal
        self.dropout = dropout
        self.flash = flash

    def get_mask(self, i, j, device):
        return flow.ones(i, j, dtype=flow.bool, device=device).tril(j - i)

    def flash_attn(self, q, k, v, mask=None, attn_bias=None):
        return self._attend(q, k, v, mask, attn_bias, backend="flash")

    def forward(self, q, k, v, mask=None, attn_bias=None):
        return self._attend(q, k, v, mask, attn_bias, backend="flash" if self.flash else "math")

    def _attend(self, q, k, v, mask, attn_bias, backend):
        dropout_p = self.dropout if self.training else 0.0
        return attention(
            q,
            k,
            v,
            mask=mask,
            attn_bias=attn_bias,
            causal=self.causal,
            dropout_p=dropout_p,
            backend=backend,
        )


def _keep_mask(q, k, mask, causal, scores):
    """The boolean may-attend mask (mask AND causal) placed like `scores`, or None."""
    keep = None
    if causal:
        q_len, k_len = q.shape[-2], k.shape[-2]
        # aligned to the last key, as when q is a suffix of k
        keep = ones_beside((q_len, k_len), scores, dtype=flow.bool).tril(k_len - q_len)
    if mask is not None:
        mask = replicate_like(mask, scores)
        keep = mask if keep is None else flow.logical_and(keep, mask)
    return keep


def _fused_kernel_mask(keep, scores):
    """`keep` as OneFlow 0.9's fused softmax kernels take it (fused_scale_mask_softmax_op.cpp
    checks it): bool, of the scores' rank, with the full key dimension. Math and flash also take 0/1
    ints or floats and a last dimension of 1."""
    if keep.dtype != flow.bool:
        keep = keep != 0
    while keep.dim() < scores.dim():
        keep = keep.unsqueeze(0)
    if keep.shape[-1] != scores.shape[-1]:
        keep = keep.expand(*keep.shape[:-1], scores.shape[-1])
    return keep
