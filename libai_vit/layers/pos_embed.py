"""The patch embedding and the resampling of position and patch embeddings.

Resampling reproduces torch's F.interpolate as timm calls it (align_corners=False):

- torch state dicts (timm's checkpoint_filter_fn): bicubic with antialias=True, i.e. PIL's separable
  filter (cubic a=-0.5, weights renormalised at the borders, widened when downsampling);
- JAX .npz (timm's _load_weights): bilinear without antialiasing.

Interpolation is separable and linear, so a resize is one matrix per axis, built in numpy (OneFlow's
interpolate has no antialias mode): checkpoints are resampled in numpy, and a model with
`dynamic_img_size` multiplies its position embedding by the same matrices on the fly (so the
gradient flows to the stored grid, as in timm).
"""

import functools

import numpy as np
import oneflow as flow
from libai.layers import PatchEmbedding


def _cubic(x, a):
    x = np.abs(x)
    return np.where(
        x < 1,
        ((a + 2) * x - (a + 3)) * x * x + 1,
        np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0),
    )


def resize_matrix(in_size, out_size, mode="bicubic", antialias=True):
    """(out_size, in_size) matrix M with resized = M @ signal, as torch's 1-D interpolation."""
    scale = in_size / out_size
    m = np.zeros((out_size, in_size))
    if antialias:
        support_1 = {"bicubic": 2.0, "bilinear": 1.0}[mode]
        kernel = (
            (lambda x: _cubic(x, -0.5))
            if mode == "bicubic"
            else (lambda x: np.maximum(0.0, 1 - np.abs(x)))
        )
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


@functools.lru_cache(maxsize=64)
def grid_resize_matrix(old_grid, new_grid, mode="bicubic", antialias=True):
    """(H*W, h*w) matrix taking a row-major flattened h x w grid to H x W."""
    return np.kron(
        resize_matrix(old_grid[0], new_grid[0], mode, antialias),
        resize_matrix(old_grid[1], new_grid[1], mode, antialias),
    )


def resample_pos_embed(pos_embed, new_grid, num_prefix_tokens, mode="bicubic", antialias=True):
    """(1, prefix + h*w, C) -> (1, prefix + H*W, C) for `new_grid` (H, W), keeping the prefix."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    side = int(round(np.sqrt(grid.shape[0])))
    if side * side != grid.shape[0]:
        raise ValueError(f"position embedding of {grid.shape[0]} tokens is not a square grid")
    out = grid_resize_matrix((side, side), tuple(new_grid), mode, antialias) @ grid.astype(
        np.float64
    )
    return np.concatenate([prefix, out[None].astype(pos_embed.dtype)], axis=1)


def resample_patch_embed(weight, new_size, mode="bicubic", antialias=True):
    """Conv kernel (O, I, h, w) -> (O, I, H, W) such that, on an input resized the same way, the
    patch projection is unchanged as far as possible (FlexiViT: pseudo-inverse of the resize)."""
    old = weight.shape[-2:]
    resize = grid_resize_matrix(tuple(old), tuple(new_size), mode, antialias)  # (H*W, h*w)
    out = weight.reshape(*weight.shape[:2], -1).astype(np.float64) @ np.linalg.pinv(resize)
    return out.reshape(*weight.shape[:2], *new_size).astype(weight.dtype)


def resample_pos_embed_tensor(pos_embed, old_grid, new_grid, num_prefix_tokens, antialias=True):
    """timm's `resample_abs_pos_embed` (bicubic, antialiased unless `antialias=False`) on a global
    (1, prefix + h*w, C) tensor, differentiable: the prefix rows are kept, the grid rows are
    multiplied by the resize matrix."""
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return pos_embed
    m = flow.tensor(
        grid_resize_matrix(old_grid, new_grid, antialias=antialias).astype(np.float32),
        placement=pos_embed.placement,
        sbp=[flow.sbp.broadcast] * len(pos_embed.sbp),
    )
    grid = flow.matmul(m, pos_embed[0, num_prefix_tokens:]).unsqueeze(0)
    if not num_prefix_tokens:
        return grid
    return flow.cat([pos_embed[:, :num_prefix_tokens], grid], dim=1)


class PatchEmbed(PatchEmbedding):
    """LiBai's PatchEmbedding (a broadcast Conv2d on the first stage) that also takes images of
    another size when `dynamic_img_size` (timm's `strict_img_size=False`), returning the tokens
    (normalised by `norm`, a module, when given: timm's `embed_norm_layer`) and their grid."""

    def __init__(self, *args, bias=True, norm=None, dynamic_img_size=False, **kwargs):
        super().__init__(*args, **kwargs)
        if not bias:
            self.proj.bias = None
        if norm is not None:
            self.norm = norm
        self.dynamic_img_size = dynamic_img_size

    def forward(self, x):
        h, w = x.shape[-2:]
        if not self.dynamic_img_size and (h, w) != tuple(self.img_size):
            raise ValueError(
                f"input images are {h}x{w} but the model's img_size is {tuple(self.img_size)}: "
                f"resize them, or build the model with dynamic_img_size=True"
            )
        x = self.proj(x)
        grid = tuple(x.shape[-2:])
        return self.norm(x.flatten(2).transpose(1, 2)), grid
