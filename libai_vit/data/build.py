"""Data loaders for LiBai's trainer: the train loader uses the layout-independent sampler, and every
sample's augmentation draws from its own seed, so loader workers change neither results nor resumes.

OneFlow's DataLoader seeds each worker once, from the main process's generator, when the iterator
starts: a run resumed mid-epoch would restart the workers' streams at another sample, and which worker
gets which batch depends on their number. Here each sample is fetched as (index, seed), the seed
derived from (seed, step, data-parallel rank, position in the batch), and Python's `random`, numpy
and OneFlow's generator are reseeded from it before the transforms run: an image's augmentation is a
function of where it sits in the sample stream, with 0, 1 or 8 workers, uninterrupted or resumed.
"""
import random

import numpy as np
import oneflow as flow
import omegaconf
from libai.data.build import build_image_train_loader
from libai.utils import distributed as dist
from oneflow.utils.data import ConcatDataset, Dataset, get_worker_info

from libai_vit import parallel
from libai_vit.data.sampler import GlobalBatchSampler


class SeededBatches:
    """Wraps the batch sampler: each index comes with the seed of its augmentation."""

    def __init__(self, sampler, seed, data_parallel_rank):
        self.sampler, self.seed, self.rank = sampler, int(seed), int(data_parallel_rank)

    def __iter__(self):
        for indices in self.sampler:
            # the sampler counts consumed samples after a batch is taken: this batch's step
            step = self.sampler.consumed_samples // self.sampler.global_batch
            yield [(i, (self.seed, step, self.rank, j)) for j, i in enumerate(indices)]

    def __len__(self):
        return len(self.sampler)


class SeededSamples(Dataset):
    """Fetches (index, key): Python's `random`, numpy's and OneFlow's default generators are reseeded
    from `key` before the sample is made (flowvision's crop and flip draw from OneFlow's, RandAugment
    from Python's). In the main process (no workers) the streams then continue from where they were:
    mixup and the model draw from them there. OneFlow's generator state does not round-trip on CPU,
    so it is reseeded from a number drawn from it before."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, key = item
        py_seed, np_seed, flow_seed = np.random.SeedSequence(list(key)).generate_state(3)
        in_main = get_worker_info() is None
        if in_main:
            saved = random.getstate(), np.random.get_state(), int(flow.randint(0, 2 ** 62, (1,)).item())
        random.seed(int(py_seed))
        np.random.seed(int(np_seed))
        flow.manual_seed(int(flow_seed))
        try:
            return self.dataset[index]
        finally:
            if in_main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                flow.manual_seed(saved[2])


def seeded_loader_inputs(dataset, sampler, seed):
    """(dataset, batch sampler) for a DataLoader whose samples carry their augmentation seeds."""
    return SeededSamples(dataset), SeededBatches(sampler, seed, sampler.data_parallel_rank)


def build_train_loader(dataset, train_batch_size, test_batch_size=None, num_workers=2,
                       consumed_samples=0, seed=0, shuffle=True, mixup_func=None, prefetch_factor=2, **kwargs):
    """`train_batch_size` (set by the trainer) is this rank's batch: micro-batch x accumulation.
    With `num_workers` > 0, workers load the next `prefetch_factor` batches each while the model
    computes; they stay alive across epochs (the sampler never ends)."""
    if isinstance(dataset, (list, tuple, omegaconf.ListConfig)):
        dataset = dataset[0] if len(dataset) == 1 else ConcatDataset(list(dataset))
    sampler = GlobalBatchSampler(len(dataset), train_batch_size,
                                 data_parallel_rank=parallel.data_parallel_rank(),
                                 data_parallel_size=dist.get_data_parallel_size(),
                                 shuffle=shuffle, seed=seed, consumed_samples=consumed_samples)
    dataset, batches = seeded_loader_inputs(dataset, sampler, seed)
    if num_workers > 0:
        kwargs["prefetch_factor"] = prefetch_factor
    return build_image_train_loader(dataset, train_batch_size, sampler=batches, num_workers=num_workers,
                                    mixup_func=mixup_func, **kwargs)
