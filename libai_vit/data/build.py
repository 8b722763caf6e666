"""Data loaders for LiBai's trainer: the train loader uses the layout-independent sampler."""
import omegaconf
from libai.data.build import build_image_train_loader
from libai.utils import distributed as dist
from oneflow.utils.data import ConcatDataset

from libai_vit import parallel
from libai_vit.data.sampler import GlobalBatchSampler


def build_train_loader(dataset, train_batch_size, test_batch_size=None, num_workers=2,
                       consumed_samples=0, seed=0, shuffle=True, mixup_func=None, num_repeats=1, **kwargs):
    """`train_batch_size` (set by the trainer) is this rank's batch: micro-batch x accumulation;
    `num_repeats` > 1: repeated augmentation (see GlobalBatchSampler)."""
    if isinstance(dataset, (list, tuple, omegaconf.ListConfig)):
        dataset = dataset[0] if len(dataset) == 1 else ConcatDataset(list(dataset))
    sampler = GlobalBatchSampler(len(dataset), train_batch_size,
                                 data_parallel_rank=parallel.data_parallel_rank(),
                                 data_parallel_size=dist.get_data_parallel_size(),
                                 shuffle=shuffle, seed=seed, consumed_samples=consumed_samples,
                                 num_repeats=num_repeats)
    return build_image_train_loader(dataset, train_batch_size, sampler=sampler, num_workers=num_workers,
                                    mixup_func=mixup_func, **kwargs)
