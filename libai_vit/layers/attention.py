"""Scaled dot-product attention with selectable backends, on (batch, heads, seq, head_dim) tensors.

Every backend is a function with the signature of `attention` below; `attention` picks one.
Only the "math" backend exists yet; "fused", "flash" and "auto" come with the flash-attention issue.
"""
import math

import oneflow as flow

BACKENDS = ("math",)


def math_attention(q, k, v, mask=None, attn_bias=None, causal=False, dropout_p=0.0, scale=None,
                   return_weights=False):
    """The plain reference: scale, bias, mask, causal, softmax, dropout, matmul."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = flow.matmul(q, k, transpose_b=True, alpha=scale)
    if attn_bias is not None:
        scores = scores + attn_bias
    if causal:
        q_len, k_len = q.shape[-2], k.shape[-2]
        # aligned to the last key, as when q is a suffix of k
        keep = flow.ones(q_len, k_len, dtype=flow.bool, device=_local_device(q)).tril(k_len - q_len)
        keep = _like(keep, scores)
        scores = flow.masked_fill(scores, keep.logical_not(), -math.inf)
    if mask is not None:
        scores = flow.masked_fill(scores, _like(mask, scores).logical_not(), -math.inf)
    weights = flow.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = flow.nn.functional.dropout(weights, p=dropout_p, training=True)
    out = flow.matmul(weights, v)
    return (out, weights) if return_weights else out


def _local_device(t):
    return t.placement.type if t.is_global else t.device


def _like(small, ref):
    """Place a local helper tensor (mask) beside a global reference tensor."""
    if ref.is_global and not small.is_global:
        return small.to_global(placement=ref.placement, sbp=[flow.sbp.broadcast] * len(ref.sbp))
    return small


def attention(q, k, v, mask=None, attn_bias=None, causal=False, dropout_p=0.0, scale=None,
              backend="math", return_weights=False):
    """softmax(q k^T * scale + bias, masked) v. `mask` is boolean, True = may attend."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")
    return math_attention(q, k, v, mask=mask, attn_bias=attn_bias, causal=causal,
                          dropout_p=dropout_p, scale=scale, return_weights=return_weights)
