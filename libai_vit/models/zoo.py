"""timm-compatible model names -> VisionTransformer kwargs, and `create_model`."""
from libai_vit.models.vision_transformer import VisionTransformer

_SIZES = {  # embed_dim, depth, num_heads (timm's / the ViT and DeiT papers')
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


def _entry(size, patch, img, **extra):
    embed_dim, depth, num_heads = _SIZES[size]
    return dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=patch, img_size=img, **extra)


MODELS = {
    f"vit_{size}_patch{patch}_{img}": _entry(size, patch, img)
    for size, patch, img in [
        ("tiny", 16, 224), ("tiny", 16, 384), ("small", 16, 224), ("small", 16, 384), ("small", 32, 224),
        ("base", 16, 224), ("base", 16, 384), ("base", 32, 224), ("base", 32, 384), ("base", 14, 224),
        ("large", 16, 224), ("large", 16, 384), ("large", 32, 224), ("large", 14, 224),
        ("huge", 14, 224),
    ]
}
MODELS.update({
    f"deit_{size}_patch16_{img}": _entry(size, 16, img)
    for size, img in [("tiny", 224), ("small", 224), ("base", 224), ("base", 384)]
})


def list_models():
    return sorted(MODELS)


def model_kwargs(name, **overrides):
    """The kwargs of zoo model `name`, with timm-style overrides (num_classes, img_size, ...)."""
    if name not in MODELS:
        close = [m for m in MODELS if name.split("_")[0] in m][:8]
        raise ValueError(f"unknown model {name!r}; known: {', '.join(close or list_models())}")
    return {**MODELS[name], **overrides}


def create_model(name, pretrained=None, trust=False, strict=True, **kwargs):
    """Build zoo model `name` on the current layout (1x1x1 without a launcher), like timm's.

    `pretrained`: a checkpoint file (timm/DeiT/MAE/JAX formats, or this project's) loaded into the
    model, resampling the position embedding when img_size differs and dropping the head when
    num_classes differs; `trust=True` allows .pth pickles beyond plain tensors.
    """
    return pretrained_vit(pretrained, trust=trust, strict=strict, **model_kwargs(name, **kwargs))


def pretrained_vit(pretrained=None, trust=False, strict=True, **kwargs):
    """`VisionTransformer(**kwargs)` with the `pretrained` checkpoint loaded: also the LazyCall
    target of configs that start from a file (`model.pretrained=FILE`)."""
    model = VisionTransformer(**kwargs)
    if pretrained:
        from libai_vit.pretrained import load_pretrained

        load_pretrained(model, pretrained, trust=trust, strict=strict)
    return model
