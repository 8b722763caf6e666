"""The DeiT/MAE fine-tuning transforms, from flowvision's create_transform; what is added is the
recipe's defaults and the eval crop rule (crop_pct 0.875 up to 224 px, 1.0 above, as DeiT)."""

import warnings

from flowvision.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from flowvision.data.transforms_factory import create_transform

# flowvision's own factory passes PIL's int interpolation codes to its transforms, which then warn
warnings.filterwarnings(
    "ignore", message="Argument interpolation should be of type InterpolationMode"
)


def train_transform(
    img_size=224,
    scale=(0.08, 1.0),
    hflip=0.5,
    auto_augment="rand-m9-mstd0.5-inc1",
    color_jitter=0.4,
    re_prob=0.25,
    interpolation="bicubic",
    mean=IMAGENET_DEFAULT_MEAN,
    std=IMAGENET_DEFAULT_STD,
):
    """RandomResizedCrop(scale) -> flip -> RandAugment (or color jitter when auto_augment is None)
    -> normalise -> random erasing of one random-pixel box with probability re_prob."""
    return create_transform(
        input_size=img_size,
        is_training=True,
        scale=tuple(scale),
        hflip=hflip,
        auto_augment=auto_augment,
        color_jitter=color_jitter,
        re_prob=re_prob,
        re_mode="pixel",
        re_count=1,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
    )


def default_crop_pct(img_size):
    size = min(img_size) if isinstance(img_size, (tuple, list)) else img_size
    return 0.875 if size <= 224 else 1.0


def eval_transform(
    img_size=224,
    crop_pct=None,
    interpolation="bicubic",
    mean=IMAGENET_DEFAULT_MEAN,
    std=IMAGENET_DEFAULT_STD,
):
    """Resize the short side to img_size / crop_pct, center-crop img_size, normalise."""
    crop_pct = default_crop_pct(img_size) if crop_pct is None else crop_pct
    return create_transform(
        input_size=img_size,
        is_training=False,
        crop_pct=crop_pct,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
    )
