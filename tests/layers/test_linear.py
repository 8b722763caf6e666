"""Sequence parallelism's column-parallel projections (`layers.linear.column_parallel`) at TP=2,
in launched processes (sequence_parallel_probe.py): each block kind's gradients equal those without
sequence parallelism, and what a block keeps of the residual stream for the backward pass is each
rank's tokens, not the whole sequence (the projections all-gather their input again there)."""

import os

import numpy as np
import pytest

from conftest import launch_script

PROBE = os.path.join(os.path.dirname(__file__), "sequence_parallel_probe.py")
KINDS = ["block", "swiglu", "parallel_scaling", "parallel_things"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("sequence_parallel") / "out.npz"
    launch_script(PROBE, 2, [out])
    return np.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_with_sequence_parallelism_equal_those_without(probe, kind):
    names = [k for k in probe.files if k.startswith(f"{kind}/tp/grad/")]
    assert len(names) > 10
    largest = max(np.abs(probe[k]).max() for k in names)
    # gradients that are zero in exact arithmetic (k_norm's bias: softmax ignores a shift shared by
    # all keys) differ in rounding only: the tolerance is relative to the largest gradient
    worst = max(np.abs(probe[k] - probe[k.replace("/tp/", "/sp/")]).max() for k in names)
    print(f"{kind}: max |grad_sp - grad_tp| = {worst:.1e} (largest gradient {largest:.2f})")
    assert worst <= 1e-5 * largest


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_parallel_blocks_keep_each_ranks_tokens_for_the_backward(probe, kind):
    assert int(probe[f"{kind}/tp/kept_tokens"]) == 17  # 16 patches + the class token
    assert int(probe[f"{kind}/sp/kept_tokens"]) == 9  # padded to 18, half of them a rank
