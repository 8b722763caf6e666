"""Pieces the recipe fidelity runs (tests/projects/fidelity/*.py) put in place of ImageNet: the
reference's fixed images as a dataset, and flowvision's Mixup with the reference's fixed lambda and
cutmix box (generators/make_recipe_fixtures.py does the same to timm's Mixup)."""

import json
import os

import flowvision.data.mixup as flowvision_mixup
import numpy as np
import oneflow as flow
from flowvision.data import Mixup
from libai.config import LazyCall
from libai.data.build import build_image_test_loader
from libai.data.structures import DistTensorData, Instance

FIXTURES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "recipes"
)


def reference():
    with open(os.path.join(FIXTURES, "reference.json")) as f:
        return json.load(f)


class NpzImages(flow.utils.data.Dataset):
    """The reference's uint8 images, normalised as the reference does; no augmentation."""

    def __init__(self, path=os.path.join(FIXTURES, "data.npz"), normalize=(0.5, 0.25)):
        data = np.load(path)
        self.images = (data["images"].astype(np.float32) / 255 - normalize[0]) / normalize[1]
        self.labels = data["labels"]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return Instance(
            images=DistTensorData(flow.tensor(self.images[i]), placement_idx=0),
            labels=DistTensorData(
                flow.tensor(int(self.labels[i]), dtype=flow.long), placement_idx=-1
            ),
        )


class FixedMixup(Mixup):
    """Mixup with `mixup_lam` on even calls, cutmix with `cutmix_lam` and box `box` on odd ones."""

    def __init__(self, mixup_lam, cutmix_lam, box, **kwargs):
        super().__init__(**kwargs)
        self.fixed = (mixup_lam, cutmix_lam, tuple(box))
        self.calls = 0

    def _params_per_batch(self):
        cutmix = self.calls % 2 == 1
        self.calls += 1
        return (self.fixed[1] if cutmix else self.fixed[0]), cutmix

    def __call__(self, x, target):
        box = self.fixed[2]
        flowvision_mixup.rand_bbox = lambda img_shape, lam, margin=0.0, count=None: box
        return super().__call__(x, target)


def on_reference(dataloader, model, train):
    """Point a recipe config at the reference's tiny model, fixed batches and step count (the
    recipe's optimizer, schedule, loss and layout stay the config's)."""
    ref = reference()
    for key, value in ref["model"].items():
        setattr(model, key, value)
    model.drop_path_rate = 0.0  # random: no PyTorch run can draw the same

    mixup = dataloader.train.mixup_func
    dataloader.train.dataset = [LazyCall(NpzImages)(normalize=ref["normalize"])]
    dataloader.train.mixup_func = LazyCall(FixedMixup)(
        mixup_lam=ref["mix"]["mixup_lam"],
        cutmix_lam=ref["mix"]["cutmix_lam"],
        box=ref["mix"]["box"],
        mixup_alpha=mixup.mixup_alpha,
        cutmix_alpha=mixup.cutmix_alpha,
        prob=mixup.prob,
        switch_prob=mixup.switch_prob,
        mode=mixup.mode,
        label_smoothing=mixup.label_smoothing,
        num_classes="${model.num_classes}",
    )
    # the reference's order (timm's RepeatAugSampler, shuffle=False)
    dataloader.train.shuffle = False
    dataloader.train.num_workers = 0
    dataloader.test = [
        LazyCall(build_image_test_loader)(
            dataset=LazyCall(NpzImages)(normalize=ref["normalize"]), num_workers=0
        )
    ]

    train.train_epoch = 0
    train.train_iter = ref["steps"]
    train.global_batch_size = ref["global_batch"]
    train.test_micro_batch_size = 8
    train.log_period = 1
    train.checkpointer.period = ref["steps"]
    train.evaluation.eval_period = ref["steps"]
