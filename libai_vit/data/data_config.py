"""A model's data config as timm resolves it (`resolve_data_config`: input size, interpolation,
mean, std, crop_pct, crop_mode from the model's `pretrained_cfg`, overridden by `args`), and the
evaluation transform it describes (timm's `transforms_imagenet_eval`), from flowvision's
transforms: a Resize, a CenterCrop, ToTensor, Normalize, which the ONNX metadata can describe."""

import math

from flowvision import transforms
from flowvision.data.constants import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
CROP_MODES = ("center", "squash")  # timm's 'border' (pad to the crop) is not built here


def resolve_data_config(model=None, args=None, pretrained_cfg=None):
    """timm's `resolve_data_config`: each key from `args` (also `img_size` for a square input
    size), else from `pretrained_cfg` (default: `model.pretrained_cfg`), else timm's default
    (3x224x224, bicubic, ImageNet mean/std, crop_pct 0.875, 'center')."""
    args = {k: v for k, v in (args or {}).items() if v is not None}
    if pretrained_cfg is None:
        pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    if args.get("input_size") is None and args.get("img_size") is not None:
        args["input_size"] = (3, int(args["img_size"]), int(args["img_size"]))
    defaults = dict(
        input_size=(3, 224, 224),
        interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        crop_pct=DEFAULT_CROP_PCT,
        crop_mode="center",
    )
    config = {}
    for key in DATA_CONFIG_KEYS:
        value = args.get(key, pretrained_cfg.get(key) or defaults[key])
        config[key] = tuple(value) if isinstance(value, list) else value
    return config


def create_eval_transform(
    input_size,
    interpolation="bicubic",
    mean=IMAGENET_DEFAULT_MEAN,
    std=IMAGENET_DEFAULT_STD,
    crop_pct=DEFAULT_CROP_PCT,
    crop_mode="center",
):
    """timm's eval transform: resize to input size / crop_pct ('center': the short side, keeping
    the aspect ratio; 'squash': both sides), center-crop the input size, to tensor, normalise."""
    if crop_mode not in CROP_MODES:
        raise ValueError(f"crop_mode={crop_mode!r} must be one of {CROP_MODES}")
    size = tuple(input_size[-2:])
    scale = tuple(math.floor(s / (crop_pct or DEFAULT_CROP_PCT)) for s in size)
    mode = transforms.InterpolationMode(interpolation)
    if crop_mode == "squash":
        resize = transforms.Resize(scale, interpolation=mode)
    elif scale[0] == scale[1]:
        resize = transforms.Resize(scale[0], interpolation=mode)
    else:
        raise ValueError(
            f"crop_mode='center' for a non-square input size {size} is not built here: use "
            f"crop_mode='squash'"
        )
    return transforms.Compose(
        [
            resize,
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean=tuple(mean), std=tuple(std)),
        ]
    )


def model_eval_transform(model, args=None):
    """The eval transform of `model`'s resolved data config."""
    return create_eval_transform(**resolve_data_config(model, args))
