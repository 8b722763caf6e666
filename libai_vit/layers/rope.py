"""2D rotary position embedding (RoPE) as EVA-02 uses it (timm's `RotaryEmbeddingCat`, in_pixels=False).

Each head's dims are rotated in pairs (interleaved: (x0, x1), (x2, x3), ...). The first half of the
pairs turns with the patch's row, the second half with its column, at frequencies
1 / temperature ** (i / (head_dim / 4)). Positions are patch indices, rescaled so that the grid maps
onto `ref_feat_shape` (the pre-training grid) when the model runs at another size.

The sin/cos tables depend on the grid only, so they are built on the host (float32, as timm does)
and cached per grid. Prefix tokens (class, registers) are not rotated: their rows are cos 1, sin 0,
so the rotation applies to the whole sequence at once, on whatever ranks hold the heads.
"""
import functools

import numpy as np
import oneflow as flow


@functools.lru_cache(maxsize=32)
def rope_tables(grid, head_dim, ref_feat_shape=None, temperature=10000.0, num_prefix_tokens=0):
    """(sin, cos) float32 arrays of shape (prefix + H*W, head_dim) for a token grid (H, W)."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {head_dim}")
    num_bands = head_dim // 4
    bands = (1.0 / temperature ** (np.arange(num_bands, dtype=np.float32) / np.float32(num_bands))).astype(np.float32)
    axes = [np.arange(n, dtype=np.float32) for n in grid]
    if ref_feat_shape is not None:
        axes = [t / np.float32(n) * np.float32(r) for t, n, r in zip(axes, grid, ref_feat_shape)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (H, W, 2)
    angles = (coords[..., None] * bands).reshape(grid[0] * grid[1], 2 * num_bands)
    angles = np.repeat(angles, 2, axis=-1)  # interleaved pairs share an angle
    sin, cos = np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)
    if num_prefix_tokens:
        sin = np.concatenate([np.zeros((num_prefix_tokens, head_dim), np.float32), sin])
        cos = np.concatenate([np.ones((num_prefix_tokens, head_dim), np.float32), cos])
    return sin, cos


def rotate_pairs(x):
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last dim."""
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    return flow.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).reshape(*x.shape)


def apply_rope(x, sin, cos):
    """Rotate (batch, heads, seq, head_dim) `x` by the (seq, head_dim) tables."""
    return x * cos + rotate_pairs(x) * sin


class RotaryEmbedding2D:
    """The tables for a grid, placed beside the tensor they rotate (no parameters, nothing saved)."""

    def __init__(self, head_dim, ref_feat_shape=None, temperature=10000.0, num_prefix_tokens=0):
        self.head_dim = head_dim
        self.ref_feat_shape = tuple(ref_feat_shape) if ref_feat_shape is not None else None
        self.temperature = temperature
        self.num_prefix_tokens = num_prefix_tokens

    def __call__(self, grid, like):
        sin, cos = rope_tables(tuple(grid), self.head_dim, self.ref_feat_shape, self.temperature,
                               self.num_prefix_tokens)
        if like.is_global:
            place = dict(placement=like.placement, sbp=[flow.sbp.broadcast] * len(like.sbp))
        else:
            place = dict(device=like.device)
        return flow.tensor(sin, **place), flow.tensor(cos, **place)
