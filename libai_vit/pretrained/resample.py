"""Resampling of position and patch embeddings, in numpy, reproducing torch's F.interpolate as timm
calls it (align_corners=False):

- torch state dicts (timm's checkpoint_filter_fn): bicubic with antialias=True, i.e. PIL's separable
  filter (cubic a=-0.5, weights renormalised at the borders, widened when downsampling);
- JAX .npz (timm's _load_weights): bilinear without antialiasing.

Interpolation is separable and linear, so a resize is one matrix per axis; OneFlow's interpolate has no
antialias mode, hence numpy.
"""
import numpy as np


def _cubic(x, a):
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def resize_matrix(in_size, out_size, mode="bicubic", antialias=True):
    """(out_size, in_size) matrix M with resized = M @ signal, as torch's 1-D interpolation."""
    scale = in_size / out_size
    m = np.zeros((out_size, in_size))
    if antialias:
        support_1 = {"bicubic": 2.0, "bilinear": 1.0}[mode]
        kernel = (lambda x: _cubic(x, -0.5)) if mode == "bicubic" else (lambda x: np.maximum(0.0, 1 - np.abs(x)))
        stretch = max(scale, 1.0)  # downsampling widens the filter
        support = support_1 * stretch
        for i in range(out_size):
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), in_size)
            w = kernel((np.arange(lo, hi) - center + 0.5) / stretch)
            m[i, lo:hi] = w / w.sum()
        return m
    for i in range(out_size):
        src = (i + 0.5) * scale - 0.5
        if mode == "bilinear":
            src = max(src, 0.0)
            i0 = int(src)
            t = src - i0
            m[i, i0] += 1 - t
            m[i, min(i0 + 1, in_size - 1)] += t
        else:  # torch's non-antialiased bicubic: a=-0.75, taps clamped to the border
            i0 = int(np.floor(src))
            t = src - i0
            for k in range(-1, 3):
                m[i, min(max(i0 + k, 0), in_size - 1)] += _cubic(t - k, -0.75)
    return m


def resample_pos_embed(pos_embed, new_grid, num_prefix_tokens, mode="bicubic", antialias=True):
    """(1, prefix + h*w, C) -> (1, prefix + H*W, C) for `new_grid` (H, W); the class token is kept."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    side = int(round(np.sqrt(grid.shape[0])))
    if side * side != grid.shape[0]:
        raise ValueError(f"position embedding of {grid.shape[0]} tokens is not a square grid")
    mh = resize_matrix(side, new_grid[0], mode, antialias)
    mw = resize_matrix(side, new_grid[1], mode, antialias)
    grid = grid.reshape(side, side, -1).astype(np.float64)
    out = np.einsum("yi,xj,ijc->yxc", mh, mw, grid).reshape(1, -1, grid.shape[-1])
    return np.concatenate([prefix, out.astype(pos_embed.dtype)], axis=1)


def resample_patch_embed(weight, new_size, mode="bicubic", antialias=True):
    """Conv kernel (O, I, h, w) -> (O, I, H, W) such that, on an input resized the same way, the patch
    projection is unchanged as far as possible (FlexiViT: pseudo-inverse of the resize)."""
    old = weight.shape[-2:]
    resize = np.kron(resize_matrix(old[0], new_size[0], mode, antialias),
                     resize_matrix(old[1], new_size[1], mode, antialias))  # (H*W, h*w)
    out = weight.reshape(*weight.shape[:2], -1).astype(np.float64) @ np.linalg.pinv(resize)
    return out.reshape(*weight.shape[:2], *new_size).astype(weight.dtype)
