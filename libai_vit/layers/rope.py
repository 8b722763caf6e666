"""2D rotary position embedding (RoPE), timm's two kinds (`rope_type`):

- 'cat', EVA-02 (timm's `RotaryEmbeddingCat`, in_pixels=False): positions are patch indices,
  rescaled so that the grid maps onto `ref_feat_shape` (the pre-training grid) when the model runs
  at another size; frequencies 1 / temperature ** (i / (head_dim / 4));
- 'dinov3' (timm's `RotaryEmbeddingDinoV3`): positions are patch centres normalised to [-1, 1] per
  axis ((i + 0.5) / n * 2 - 1, so any grid spans the same range), angles 2 pi pos / period with
  periods temperature ** (2 i / (head_dim / 2)).
The first half of the frequencies turns with the patch's row, the second half with its column
(`grid_indexing='ij'`; 'xy' swaps them, Perception Encoder); `grid_offset` is added to every
patch position before rescaling (PE: 1). The dims rotate in interleaved pairs ((x0, x1), (x2,
x3), ...) or, with `rotate_half` (DINOv3), as halves (x_i, x_{i + head_dim/2}).

The sin/cos tables depend on the grid only, so they are built on the host (float32, as timm does)
and cached per grid. Prefix tokens (class, registers) are not rotated: their rows are cos 1, sin 0,
so the rotation applies to the whole sequence at once, on whatever ranks hold the heads. The pair
swap is a product with a constant signed permutation matrix: OneFlow 0.9's nn.Graph mis-infers the
split of a stacked pair view under tensor parallelism (a physical shape mismatch at compile time).
"""

import functools

import numpy as np
import oneflow as flow

ROPE_TYPES = ("cat", "dinov3")


def _coords(axes, grid_indexing):
    """(H, W, 2) positions of the patches: (row, column) for 'ij', (column, row) for 'xy'."""
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return coords[..., ::-1] if grid_indexing == "xy" else coords


def _angles_cat(grid, head_dim, ref_feat_shape, temperature, grid_offset, grid_indexing):
    num_bands = head_dim // 4
    bands = (
        1.0 / temperature ** (np.arange(num_bands, dtype=np.float32) / np.float32(num_bands))
    ).astype(np.float32)
    axes = [np.arange(n, dtype=np.float32) + np.float32(grid_offset) for n in grid]
    if ref_feat_shape is not None:
        axes = [t / np.float32(n) * np.float32(r) for t, n, r in zip(axes, grid, ref_feat_shape)]
    coords = _coords(axes, grid_indexing)
    return (coords[..., None] * bands).reshape(grid[0] * grid[1], 2 * num_bands)


def _angles_dinov3(grid, head_dim, temperature, grid_offset, grid_indexing):
    num_bands = head_dim // 4
    exponents = np.float32(2.0) * np.arange(num_bands, dtype=np.float32) / np.float32(head_dim // 2)
    periods = (np.float32(temperature) ** exponents).astype(np.float32)
    axes = [
        (np.arange(0.5, n, dtype=np.float32) + np.float32(grid_offset)) / np.float32(n)
        for n in grid
    ]
    coords = _coords(axes, grid_indexing) * np.float32(2) - np.float32(1)
    angles = np.float32(2 * np.pi) * coords.reshape(-1, 2)[:, :, None] / periods
    return angles.reshape(grid[0] * grid[1], 2 * num_bands).astype(np.float32)


@functools.lru_cache(maxsize=32)
def rope_tables(
    grid,
    head_dim,
    ref_feat_shape=None,
    temperature=10000.0,
    num_prefix_tokens=0,
    rope_type="cat",
    rotate_half=False,
    grid_offset=0.0,
    grid_indexing="ij",
):
    """(sin, cos) float32 arrays of shape (prefix + H*W, head_dim) for a token grid (H, W)."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {head_dim}")
    if grid_indexing not in ("ij", "xy"):
        raise ValueError(f"rope_grid_indexing={grid_indexing!r} is not 'ij' or 'xy'")
    if rope_type == "cat":
        angles = _angles_cat(
            grid, head_dim, ref_feat_shape, temperature, grid_offset, grid_indexing
        )
    elif rope_type == "dinov3":  # timm's dinov3 RoPE takes no ref_feat_shape
        angles = _angles_dinov3(grid, head_dim, temperature, grid_offset, grid_indexing)
    else:
        raise ValueError(f"rope_type={rope_type!r} is not one of {ROPE_TYPES}")
    # a rotated pair shares an angle: (x0, x1) interleaved, (x_i, x_{i + head_dim/2}) as halves
    angles = np.concatenate([angles, angles], -1) if rotate_half else np.repeat(angles, 2, -1)
    sin, cos = np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)
    if num_prefix_tokens:
        sin = np.concatenate([np.zeros((num_prefix_tokens, head_dim), np.float32), sin])
        cos = np.concatenate([np.ones((num_prefix_tokens, head_dim), np.float32), cos])
    return sin, cos


@functools.lru_cache(maxsize=8)
def pair_swap_matrix(head_dim, rotate_half=False):
    """R with x @ R = (-x1, x0, -x3, x2, ...) for x = (x0, x1, x2, x3, ...); with `rotate_half`,
    x @ R = (-x_h, ..., -x_{2h-1}, x_0, ..., x_{h-1}), h = head_dim / 2."""
    r = np.zeros((head_dim, head_dim), np.float32)
    if rotate_half:
        h = np.arange(head_dim // 2)
        r[h + head_dim // 2, h] = -1.0
        r[h, h + head_dim // 2] = 1.0
    else:
        r[np.arange(1, head_dim, 2), np.arange(0, head_dim, 2)] = -1.0
        r[np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)] = 1.0
    return r


def apply_rope(x, sin, cos, swap):
    """Rotate (batch, heads, seq, head_dim) `x` by the (seq, head_dim) tables."""
    return x * cos + flow.matmul(x, swap) * sin


class RotaryEmbedding2D:
    """The tables for a grid, placed beside the tensor they rotate (no parameters, none saved)."""

    def __init__(
        self,
        head_dim,
        ref_feat_shape=None,
        temperature=10000.0,
        num_prefix_tokens=0,
        rope_type="cat",
        rotate_half=False,
        grid_offset=0.0,
        grid_indexing="ij",
    ):
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_type={rope_type!r} is not one of {ROPE_TYPES}")
        self.head_dim = head_dim
        self.ref_feat_shape = tuple(ref_feat_shape) if ref_feat_shape is not None else None
        self.temperature = temperature
        self.num_prefix_tokens = num_prefix_tokens
        self.rope_type = rope_type
        self.rotate_half = rotate_half
        self.grid_offset = grid_offset
        self.grid_indexing = grid_indexing

    def __call__(self, grid, like):
        tables = rope_tables(
            tuple(grid),
            self.head_dim,
            self.ref_feat_shape,
            self.temperature,
            self.num_prefix_tokens,
            self.rope_type,
            self.rotate_half,
            self.grid_offset,
            self.grid_indexing,
        ) + (pair_swap_matrix(self.head_dim, self.rotate_half),)
        if like.is_global:
            place = dict(placement=like.placement, sbp=[flow.sbp.broadcast] * len(like.sbp))
        else:
            place = dict(device=like.device)
        return tuple(flow.tensor(t, **place) for t in tables)
