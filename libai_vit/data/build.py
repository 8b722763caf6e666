"""Data loaders for LiBai's trainer: the train loader uses the layout-independent sampler, and every
sample's augmentation draws from its own seed, so loader workers change neither results nor resumes.

OneFlow's DataLoader seeds each worker once, from the main process's generator, when the iterator
starts: a run resumed mid-epoch would restart the workers' streams at another sample, and which
worker gets which batch depends on their number. Here the random streams are reseeded before each
batch from (seed, step, data-parallel rank) in whichever process loads it: an image's augmentation
is a function of where it sits in the sample stream, with 0, 1 or 8 workers, uninterrupted or
resumed.
"""

import random

import numpy as np
import omegaconf
import oneflow as flow
from libai.data.build import build_image_train_loader
from libai.utils import distributed as dist
from oneflow.utils.data import ConcatDataset, Dataset, get_worker_info

from libai_vit import parallel
from libai_vit.data.sampler import GlobalBatchSampler


class SeededBatches:
    """Wraps the batch sampler: each index comes with its batch's augmentation key and its place
    in it."""

    def __init__(self, sampler, seed, data_parallel_rank):
        self.sampler, self.seed, self.rank = sampler, int(seed), int(data_parallel_rank)

    def __iter__(self):
        for indices in self.sampler:
            # the sampler counts consumed samples after a batch is taken: this batch's step
            key = (self.seed, self.sampler.consumed_samples // self.sampler.global_batch, self.rank)
            yield [(i, key, j, len(indices)) for j, i in enumerate(indices)]

    def __len__(self):
        return len(self.sampler)


class SeededSamples(Dataset):
    """Fetches (index, key, position, batch length). A batch is fetched whole, in order, by one
    process (a worker, or the main one): before its first sample Python's `random`, numpy's and
    OneFlow's default generators are reseeded from the key (flowvision's crop and flip draw from
    OneFlow's, RandAugment from Python's). Once per batch: reseeding OneFlow's generator waits for
    its pending ops (about a millisecond). In the main process (no workers) the streams are handed
    back after the last sample: Python's and numpy's as they were (mixup draws from them there),
    OneFlow's (whose state does not round-trip on CPU) reseeded from (seed, step), the same on every
    rank."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._saved = None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, key, position, batch_len = item
        in_main = get_worker_info() is None
        if position == 0:
            if in_main:
                self._saved = random.getstate(), np.random.get_state()
            py_seed, np_seed, flow_seed = np.random.SeedSequence(list(key)).generate_state(3)
            random.seed(int(py_seed))
            np.random.seed(int(np_seed))
            flow.default_generator.manual_seed(int(flow_seed))
        try:
            return self.dataset[index]
        finally:
            if in_main and position == batch_len - 1 and self._saved is not None:
                random.setstate(self._saved[0])
                np.random.set_state(self._saved[1])
                self._saved = None
                after = np.random.SeedSequence([key[0], key[1], _AFTER_BATCH]).generate_state(1)[0]
                flow.default_generator.manual_seed(int(after))


# keys OneFlow's main-process stream after a batch, apart from any batch's key
_AFTER_BATCH = 0x5EED


def seeded_loader_inputs(dataset, sampler, seed):
    """(dataset, batch sampler) for a DataLoader whose samples carry their augmentation seeds."""
    return SeededSamples(dataset), SeededBatches(sampler, seed, sampler.data_parallel_rank)


def build_train_loader(
    dataset,
    train_batch_size,
    test_batch_size=None,
    num_workers=2,
    consumed_samples=0,
    seed=0,
    shuffle=True,
    mixup_func=None,
    num_repeats=1,
    prefetch_factor=2,
    **kwargs,
):
    """`train_batch_size` (set by the trainer) is this rank's batch: micro-batch x accumulation;
    `num_repeats` > 1: repeated augmentation (see GlobalBatchSampler). With `num_workers` > 0,
    workers load the next `prefetch_factor` batches each while the model computes; they stay alive
    across epochs (the sampler never ends)."""
    if isinstance(dataset, (list, tuple, omegaconf.ListConfig)):
        dataset = dataset[0] if len(dataset) == 1 else ConcatDataset(list(dataset))
    sampler = GlobalBatchSampler(
        len(dataset),
        train_batch_size,
        data_parallel_rank=parallel.data_parallel_rank(),
        data_parallel_size=dist.get_data_parallel_size(),
        shuffle=shuffle,
        seed=seed,
        consumed_samples=consumed_samples,
        num_repeats=num_repeats,
    )
    dataset, batches = seeded_loader_inputs(dataset, sampler, seed)
    if num_workers > 0:
        kwargs["prefetch_factor"] = prefetch_factor
    return build_image_train_loader(
        dataset,
        train_batch_size,
        sampler=batches,
        num_workers=num_workers,
        mixup_func=mixup_func,
        **kwargs,
    )
