"""A training sampler whose global batches do not depend on the layout, with repeated augmentation.

LiBai's CyclicSampler gives each data-parallel rank its own bucket of the dataset, so the samples
of one step change with DP. Here every rank draws the same permutation per epoch (seed + epoch),
cuts it into global batches, and DP rank r takes samples r, r + DP, r + 2 DP, ... of each (as
torch's DistributedSampler strides): the samples of step k are the same at 1x1x1 and at 2x2x2.
`consumed_samples` resumes mid-epoch.

Repeated augmentation (DeiT's RASampler, timm's RepeatAugSampler): with `num_repeats` k > 1 each
index of the permutation is repeated k times in a row before the cut, and an epoch keeps its length
(dataset_size // global batch steps), so it shows about dataset_size / k images k times each. The
k copies of an image are neighbours in a global batch, so the stride puts them on different DP
ranks (with different augmentation streams). Given the same permutation, rank r's indices are
exactly RepeatAugSampler's at num_replicas = DP (tests/data/test_sampler.py checks it).
"""

import numpy as np


class GlobalBatchSampler:
    def __init__(
        self,
        dataset_size,
        micro_batch_size,
        data_parallel_rank=0,
        data_parallel_size=1,
        shuffle=True,
        seed=0,
        consumed_samples=0,
        num_repeats=1,
    ):
        global_batch = micro_batch_size * data_parallel_size
        if dataset_size < global_batch:
            raise ValueError(
                f"the training set has {dataset_size} samples, fewer than one global batch "
                f"({micro_batch_size} x {data_parallel_size}): add data or lower the batch size"
            )
        if not (isinstance(num_repeats, int) and num_repeats >= 1):
            raise ValueError(
                f"num_repeats={num_repeats} must be an integer >= 1 (1: no repeated augmentation)"
            )
        self.dataset_size = dataset_size
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size
        self.global_batch = global_batch
        self.batches_per_epoch = dataset_size // global_batch
        self.shuffle = shuffle
        self.seed = seed
        self.consumed_samples = consumed_samples
        self.num_repeats = num_repeats

    def _order(self, epoch):
        order = (
            np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)
            if self.shuffle
            else np.arange(self.dataset_size)
        )
        return np.repeat(order, self.num_repeats)

    def __iter__(self):
        step = self.consumed_samples // self.global_batch
        epoch, order = None, None
        while True:
            e, i = divmod(step, self.batches_per_epoch)
            if e != epoch:
                epoch, order = e, self._order(e)
            batch = order[i * self.global_batch : (i + 1) * self.global_batch]
            yield batch[self.data_parallel_rank :: self.data_parallel_size].tolist()
            self.consumed_samples += self.global_batch
            step += 1

    def __len__(self):
        return self.dataset_size
