"""The training sampler: the samples of a step do not depend on DP, resume is exact, and repeated
augmentation gives each rank what timm's RepeatAugSampler (DeiT's RASampler) gives it."""

import itertools
import json
import os

import pytest

from libai_vit.data.sampler import GlobalBatchSampler

REFERENCE = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "fixtures", "recipes", "reference.json"
)


def _steps(n_steps, size, micro, dp, consumed=0, seed=3, repeats=1, shuffle=True):
    """Per step, the global batch: rank r's indices are its every DP-th sample."""
    iters = [
        iter(
            GlobalBatchSampler(
                size,
                micro,
                r,
                dp,
                seed=seed,
                consumed_samples=consumed,
                num_repeats=repeats,
                shuffle=shuffle,
            )
        )
        for r in range(dp)
    ]
    steps = []
    for _ in range(n_steps):
        parts = [next(it) for it in iters]
        steps.append([parts[j % dp][j // dp] for j in range(micro * dp)])
    return steps


@pytest.mark.parametrize("repeats", [1, 3])
def test_global_batches_are_the_same_for_any_data_parallel_size(repeats):
    reference = _steps(12, 50, 8, 1, repeats=repeats)
    assert _steps(12, 50, 4, 2, repeats=repeats) == reference
    assert _steps(12, 50, 2, 4, repeats=repeats) == reference


def test_each_epoch_is_a_permutation_and_epochs_differ():
    steps = _steps(12, 48, 8, 1)
    first, second = sum(steps[:6], []), sum(steps[6:], [])
    assert sorted(first) == sorted(second) == list(range(48))
    assert first != second


@pytest.mark.parametrize("repeats", [1, 3])
def test_resume_from_consumed_samples_continues_the_sequence(repeats):
    full = _steps(10, 50, 4, 2, repeats=repeats)
    assert _steps(4, 50, 4, 2, consumed=6 * 8, repeats=repeats) == full[6:]


def test_repeated_augmentation_shows_each_image_k_times_on_different_ranks():
    dp, k = 3, 3
    samplers = [iter(GlobalBatchSampler(48, 4, r, dp, seed=1, num_repeats=k)) for r in range(dp)]
    per_rank = [sum((next(s) for _ in range(4)), []) for s in samplers]  # one epoch: 48 // 12 steps
    epoch = sum(per_rank, [])
    assert (
        len(epoch) == 48
        and all(epoch.count(i) == k for i in set(epoch))
        and len(set(epoch)) == 48 // k
    )
    for i in set(epoch):  # the k copies of an image go to k different ranks
        assert sum(i in rank for rank in per_rank) == k


def test_repeated_augmentation_matches_timms_repeat_aug_sampler():
    """generators/make_recipe_fixtures.py recorded timm's per-rank indices (shuffle=False, so both
    sides start from the same order): each of our ranks gets exactly those, step after step."""
    with open(REFERENCE) as f:
        ra = json.load(f)["repeat_aug"]
    for replicas, theirs in ra["per_rank"].items():
        w, micro = int(replicas), ra["micro_batch"]
        steps = len(theirs[0]) // micro
        for rank in range(w):
            it = iter(
                GlobalBatchSampler(
                    ra["size"], micro, rank, w, shuffle=False, num_repeats=ra["num_repeats"]
                )
            )
            ours = sum((next(it) for _ in range(steps)), [])
            assert ours == theirs[rank][: steps * micro], (w, rank)


def test_too_small_dataset_and_bad_repeats_are_refused():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        list(itertools.islice(GlobalBatchSampler(5, 4, 0, 2), 1))
    with pytest.raises(ValueError, match="num_repeats=0 must be an integer >= 1"):
        GlobalBatchSampler(50, 4, num_repeats=0)
