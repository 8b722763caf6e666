"""A training sampler whose global batches do not depend on the layout.

LiBai's CyclicSampler gives each data-parallel rank its own bucket of the dataset, so the samples
of one step change with DP. Here every rank draws the same permutation per epoch (seed + epoch), cuts
it into global batches, and DP rank r takes the r-th slice of each: the samples of step k are the same
at 1x1x1 and at 2x2x2. `consumed_samples` resumes mid-epoch.
"""
import numpy as np


class GlobalBatchSampler:
    def __init__(self, dataset_size, micro_batch_size, data_parallel_rank=0, data_parallel_size=1,
                 shuffle=True, seed=0, consumed_samples=0):
        global_batch = micro_batch_size * data_parallel_size
        if dataset_size < global_batch:
            raise ValueError(f"the training set has {dataset_size} samples, fewer than one global batch "
                             f"({micro_batch_size} x {data_parallel_size}): add data or lower the batch size")
        self.dataset_size = dataset_size
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.global_batch = global_batch
        self.batches_per_epoch = dataset_size // global_batch
        self.shuffle = shuffle
        self.seed = seed
        self.consumed_samples = consumed_samples

    def _order(self, epoch):
        if not self.shuffle:
            return np.arange(self.dataset_size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)

    def __iter__(self):
        step = self.consumed_samples // self.global_batch
        epoch, order = None, None
        while True:
            e, i = divmod(step, self.batches_per_epoch)
            if e != epoch:
                epoch, order = e, self._order(e)
            start = i * self.global_batch + self.data_parallel_rank * self.micro_batch_size
            yield order[start:start + self.micro_batch_size].tolist()
            self.consumed_samples += self.global_batch
            step += 1

    def __len__(self):
        return self.dataset_size
