"""Random initial values that any slice of a tensor can draw alone, the same at every layout.

A tensor is seen as 2D (its first axis by the product of the others) and cut into blocks of
`BLOCK` x `BLOCK`; block (i, j) is drawn by its own generator, seeded by (seed, the parameter's
name, i, j). A rank draws only the blocks that overlap its shard (`parallel.local_region`), so
drawing costs each rank about its share of the model, and a shard holds the values the same
tensor would hold whole at 1x1x1. Tensor-parallel splits cut the first or second axis of a 2D
weight (LiBai's Linear weight is (in, out)) or the only axis of a bias, so every split lands in
this 2D view.
"""

import zlib

import numpy as np

BLOCK = 256


def sample(seed, name, shape, region, draw):
    """The values at `region` (a tuple of slices of `shape`) of the tensor `name` whose every
    block is `draw(rng, block_shape)` (a float array of that shape)."""
    shape = tuple(shape)
    rows, cols = (shape[0], int(np.prod(shape[1:]))) if shape else (1, 1)
    if len(shape) > 2 and any(r != slice(0, n) for r, n in zip(region[1:], shape[1:])):
        raise ValueError(f"{name}: only the first axis of a {len(shape)}-D tensor can be sliced")
    r0, r1 = (region[0].start, region[0].stop) if shape else (0, 1)
    c0, c1 = (region[1].start, region[1].stop) if len(shape) == 2 else (0, cols)
    out = np.empty((r1 - r0, c1 - c0))
    key = zlib.crc32(name.encode())
    for bi in range(r0 // BLOCK, (r1 - 1) // BLOCK + 1):
        for bj in range(c0 // BLOCK, (c1 - 1) // BLOCK + 1):
            top, left = bi * BLOCK, bj * BLOCK
            block_shape = (min(BLOCK, rows - top), min(BLOCK, cols - left))
            block = draw(np.random.default_rng([seed, key, bi, bj]), block_shape)
            lo_r, hi_r = max(r0, top), min(r1, top + block_shape[0])
            lo_c, hi_c = max(c0, left), min(c1, left + block_shape[1])
            out[lo_r - r0 : hi_r - r0, lo_c - c0 : hi_c - c0] = block[
                lo_r - top : hi_r - top, lo_c - left : hi_c - left
            ]
    return out.reshape(tuple(s.stop - s.start for s in region) if shape else ())


def normal(std):
    return lambda rng, shape: rng.normal(0.0, std, shape)


def trunc_normal(std):
    """N(0, std) truncated at +-2 std (timm's trunc_normal_ bounds), by redrawing the outliers."""

    def draw(rng, shape):
        value = rng.normal(0.0, std, shape)
        out = np.abs(value) > 2 * std
        while out.any():
            value[out] = rng.normal(0.0, std, int(out.sum()))
            out = np.abs(value) > 2 * std
        return value

    return draw


def uniform(bound):
    return lambda rng, shape: rng.uniform(-bound, bound, shape)
