# ImageNet, or any ImageFolder (root/train/<class>/*, root/val/<class>/*), with the DeiT/MAE
# transforms and mixup/cutmix; mixed labels are soft, so the model's loss must be
# SoftTargetCrossEntropy (configs/vit_imagenet.py sets it). Images are sized by the model: img_size
# follows model.img_size.
from flowvision.data import Mixup
from libai.config import LazyCall
from libai.data.build import build_image_test_loader
from omegaconf import OmegaConf

from libai_vit.data.build import build_train_loader
from libai_vit.data.folder import ImageFolder
from libai_vit.data.transforms import eval_transform, train_transform

dataloader = OmegaConf.create()
dataloader.root = "./data/imagenet"  # the ImageFolder root, read by both splits
dataloader.train = LazyCall(build_train_loader)(
    dataset=[
        LazyCall(ImageFolder)(
            root="${dataloader.root}",
            train=True,
            classes=None,  # a list of class folder names to train on a subset; None: all of train/
            transform=LazyCall(train_transform)(
                img_size="${model.img_size}",
                scale=(0.08, 1.0),  # RandomResizedCrop area range
                hflip=0.5,
                auto_augment="rand-m9-mstd0.5-inc1",  # RandAugment; None: color jitter instead
                color_jitter=0.4,
                re_prob=0.25,  # random erasing probability
                interpolation="bicubic",
            ),
        )
    ],
    num_workers=4,  # processes decoding and augmenting images while the rank computes, per rank
    prefetch_factor=2,  # batches each worker keeps ready ahead of the trainer
    # repeated augmentation (DeiT: 3): each image this many times per epoch, on different DP ranks
    num_repeats=1,
    mixup_func=LazyCall(Mixup)(
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        prob=1.0,  # probability of mixing a batch
        switch_prob=0.5,  # probability of cutmix instead of mixup
        mode="batch",
        label_smoothing=0.1,
        num_classes="${model.num_classes}",
    ),
)
dataloader.test = [
    LazyCall(build_image_test_loader)(
        dataset=LazyCall(ImageFolder)(
            root="${dataloader.root}",
            train=False,
            classes="${dataloader.train.dataset.0.classes}",
            transform=LazyCall(eval_transform)(
                img_size="${model.img_size}",
                # resize to img_size / crop_pct, center-crop; None: 0.875 up to 224 px, 1.0 above
                crop_pct=None,
                interpolation="bicubic",
            ),
        ),
        num_workers=4,
    )
]
