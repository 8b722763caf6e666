"""The training sampler: the samples of a step do not depend on DP, and resume is exact."""
import itertools

from libai_vit.data.sampler import GlobalBatchSampler


def _steps(n_steps, size, micro, dp, consumed=0, seed=3):
    """Per step, the union of all DP ranks' indices (in rank order)."""
    iters = [iter(GlobalBatchSampler(size, micro, r, dp, seed=seed, consumed_samples=consumed)) for r in range(dp)]
    return [sum((next(it) for it in iters), []) for _ in range(n_steps)]


def test_global_batches_are_the_same_for_any_data_parallel_size():
    reference = _steps(12, 50, 8, 1)
    assert _steps(12, 50, 4, 2) == reference
    assert _steps(12, 50, 2, 4) == reference


def test_each_epoch_is_a_permutation_and_epochs_differ():
    steps = _steps(12, 48, 8, 1)
    first, second = sum(steps[:6], []), sum(steps[6:], [])
    assert sorted(first) == sorted(second) == list(range(48))
    assert first != second


def test_resume_from_consumed_samples_continues_the_sequence():
    full = _steps(10, 50, 4, 2)
    assert _steps(4, 50, 4, 2, consumed=6 * 8) == full[6:]


def test_too_small_dataset_is_refused():
    import pytest

    with pytest.raises(ValueError, match="fewer than one global batch"):
        list(itertools.islice(GlobalBatchSampler(5, 4, 0, 2), 1))
