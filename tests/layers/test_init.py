"""Initial values drawn by blocks: any slice of a tensor, drawn alone, equals that slice of the
whole tensor, so every layout's shards hold the values of the 1x1x1 model."""

import numpy as np
import pytest

from libai_vit.layers import init


@pytest.mark.parametrize(
    "shape,region",
    [
        ((600, 700), (slice(100, 333), slice(250, 700))),  # crosses block edges on both axes
        ((600, 700), (slice(0, 600), slice(350, 700))),  # a column-parallel shard
        ((1000,), (slice(500, 1000),)),  # a bias shard
        ((8, 3, 4, 4), (slice(4, 8), slice(0, 3), slice(0, 4), slice(0, 4))),
    ],
)
def test_a_slice_drawn_alone_equals_the_whole_tensors_slice(shape, region):
    draw = init.trunc_normal(0.02)
    whole = init.sample(0, "w", shape, tuple(slice(0, n) for n in shape), draw)
    assert whole.shape == shape
    np.testing.assert_array_equal(init.sample(0, "w", shape, region, draw), whole[region])
    assert np.abs(whole).max() <= 0.04 and abs(whole.std() - 0.0176) < 0.002  # trunc at 2 std


def test_names_and_seeds_give_different_values_and_3d_tensors_split_on_axis_0_only():
    full = (slice(0, 4), slice(0, 5), slice(0, 6))
    a = init.sample(0, "a", (4, 5, 6), full, init.normal(1.0))
    assert not np.allclose(a, init.sample(0, "b", (4, 5, 6), full, init.normal(1.0)))
    assert not np.allclose(a, init.sample(1, "a", (4, 5, 6), full, init.normal(1.0)))
    with pytest.raises(ValueError, match="only the first axis"):
        init.sample(0, "a", (4, 5, 6), (slice(0, 4), slice(0, 2), slice(0, 6)), init.normal(1.0))
