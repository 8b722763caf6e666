"""timm model names -> this project's models, and `create_model`.

`timm_zoo.json` (written by tools/make_timm_zoo.py from timm itself) lists every timm ViT, DeiT,
DeiT III, DINOv2, CLIP, SigLIP and EVA-02 name whose architecture is built here, with its kwargs in
this project's terms ("vit": VisionTransformer; "eva": Eva, which takes timm's EVA option names).
"""

import difflib
import json
import os

from libai.config import LazyCall

from libai_vit.models.eva import Eva
from libai_vit.models.vision_transformer import VisionTransformer

with open(os.path.join(os.path.dirname(__file__), "timm_zoo.json")) as _f:
    MODELS = json.load(_f)


def list_models(pattern=""):
    """The timm names `create_model` builds, those containing `pattern`."""
    return sorted(m for m in MODELS if pattern in m)


def _entry(name):
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=5, cutoff=0.6)
        hint = f"; close: {', '.join(close)}" if close else "; see libai_vit.list_models()"
        raise ValueError(
            f"unknown model {name!r} (timm's ViT/DeiT/DeiT III/DINOv2/CLIP/SigLIP/EVA-02 "
            f"names){hint}"
        )
    return MODELS[name]


def model_kwargs(name, **overrides):
    """The kwargs of timm model `name`, with timm-style overrides (num_classes, img_size, ...)."""
    return {**_entry(name)["kwargs"], **overrides}


OUTPUTS = ("dict", "tensor")


def create_model(name, pretrained=None, trust=False, strict=True, output="dict", **kwargs):
    """Build timm model `name` on the current layout (1x1x1 without a launcher), like timm's.

    `pretrained`: a checkpoint file (timm's, the families' release formats, DeiT/MAE/JAX, or this
    project's) loaded into the model, resampling the position embedding when img_size differs and
    dropping the head when num_classes differs; `trust=True` allows .pth pickles beyond
    plain tensors.
    `output`: what `model(x)` returns: "dict" (LiBai's, what its trainer and evaluator take:
    {"losses": ...} with labels in train mode, else {"prediction_scores": ...}) or "tensor" (timm's:
    the logits, in either mode).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output={output!r} must be one of {OUTPUTS}")
    build = pretrained_eva if _entry(name)["arch"] == "eva" else pretrained_vit
    model = build(pretrained, trust=trust, strict=strict, **model_kwargs(name, **kwargs))
    model.output = output
    model.pretrained_cfg = dict(_entry(name)["pretrained_cfg"], architecture=name)
    return model


def _load(model, pretrained, trust, strict):
    if pretrained:
        from libai_vit.pretrained import load_pretrained

        load_pretrained(model, pretrained, trust=trust, strict=strict)
    return model


def pretrained_vit(pretrained=None, trust=False, strict=True, **kwargs):
    """`VisionTransformer(**kwargs)` with the `pretrained` checkpoint loaded: also the LazyCall
    target of configs that start from a file (`model.pretrained=FILE`)."""
    return _load(VisionTransformer(**kwargs), pretrained, trust, strict)


def pretrained_eva(pretrained=None, trust=False, strict=True, **kwargs):
    """`Eva(**kwargs)` with the `pretrained` checkpoint loaded (the LazyCall target for EVA-02)."""
    return _load(Eva(**kwargs), pretrained, trust, strict)


def model_config(name, pretrained=None, **overrides):
    """A LazyConfig model node for timm model `name`: every architecture key spelled out, so that a
    config reads (and the pre-launch check validates) `model.embed_dim`, `model.num_heads`, ..."""
    build = pretrained_eva if _entry(name)["arch"] == "eva" else pretrained_vit
    kwargs = {"mlp_ratio": 4.0, **model_kwargs(name, **overrides)}
    return LazyCall(build)(pretrained=pretrained, **kwargs)
