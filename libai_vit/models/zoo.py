"""timm model names -> this project's models, and `create_model`.

`timm_zoo.json` (written by generators/make_timm_zoo.py from timm itself) lists every timm ViT,
DeiT, DeiT III, DINOv2, CLIP, SigLIP and EVA-02 name whose architecture is built here, with its
kwargs in this project's terms ("vit": VisionTransformer; "eva": Eva, which takes timm's EVA option
names); InternViT-6B, which timm lacks, is added below in timm's naming.
"""

import difflib
import fnmatch
import json
import os
import re

from libai.config import LazyCall

from libai_vit.models.eva import Eva
from libai_vit.models.features import FeatureGetterNet
from libai_vit.models.vision_transformer import VisionTransformer

with open(os.path.join(os.path.dirname(__file__), "timm_zoo.json")) as _f:
    MODELS = json.load(_f)

# InternViT-6B (OpenGVLab; not in timm), named as timm names InternViT-300M: its released configs'
# shape (25 heads of 128, a qk RMSNorm over the whole width, LayerScale 0.1, no final norm), 45
# blocks at 448 px (V1.2 to V2.5) or 48 at 224 px (V1.0); InternVL tiles images at 448 and resamples
# the position embedding to other sizes with torch's plain bicubic.
_INTERNVIT_6B = dict(
    patch_size=14,
    embed_dim=3200,
    num_heads=25,
    mlp_ratio=4.0,
    qkv_bias=False,
    qk_norm=True,
    qk_norm_whole_width=True,
    norm_layer="rmsnorm",
    init_values=0.1,
    final_norm=False,
    dynamic_img_size=True,
    pos_embed_antialias=False,
)
BEYOND_TIMM = {}  # the names here that timm does not have
for _size, _depth in ((448, 45), (224, 48)):
    BEYOND_TIMM[f"vit_intern6b_patch14_{_size}"] = dict(
        arch="vit",
        kwargs=dict(_INTERNVIT_6B, img_size=_size, depth=_depth),
        pretrained_cfg=dict(
            MODELS["vit_intern300m_patch14_448"]["pretrained_cfg"], input_size=[3, _size, _size]
        ),
        pretrained_tags={},
    )
MODELS.update(BEYOND_TIMM)


def _split_tag(name):
    """timm's "architecture.tag" -> (architecture, tag or "")."""
    arch, _, tag = name.partition(".")
    return arch, tag


def is_model(name):
    """Whether `name` (a pretrained tag ignored, as timm's) is an architecture built here."""
    return _split_tag(name)[0] in MODELS


def _natural_key(name):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


def _with_tag_filters(filters):
    """timm's: a filter without a tag also matches the names with one."""
    return [g for f in filters for g in ([f] if "." in f else [f, f + ".*"])]


def list_models(filter="", pretrained=False, exclude_filters="", include_tags=None):
    """The timm names `create_model` builds, as timm's `list_models`: those matching any of the
    fnmatch wildcard `filter`s ("" or []: all; e.g. "vit_base_*", "*dinov2*") and none of
    `exclude_filters`, sorted naturally; `pretrained`: only those timm has weights for;
    `include_tags` (default: `pretrained`): the names with their pretrained tags
    ("vit_base_patch16_224.augreg_in21k")."""
    include_tags = pretrained if include_tags is None else include_tags
    include = [f for f in ([filter] if isinstance(filter, str) else filter) if f]
    exclude = [
        f for f in ([exclude_filters] if isinstance(exclude_filters, str) else exclude_filters) if f
    ]
    names = {n for n in MODELS if MODELS[n]["pretrained_tags"] or not pretrained}
    if include_tags:
        names = {f"{n}.{t}" for n in names for t in MODELS[n]["pretrained_tags"]} | {
            n for n in names if not MODELS[n]["pretrained_tags"]
        }
        include, exclude = _with_tag_filters(include), _with_tag_filters(exclude)
    if include:
        names = {n for f in include for n in fnmatch.filter(names, f)}
    for f in exclude:
        names -= set(fnmatch.filter(names, f))
    return sorted(names, key=_natural_key)


def _entry(name):
    arch, tag = _split_tag(name)
    if arch not in MODELS:
        close = difflib.get_close_matches(arch, MODELS, n=5, cutoff=0.6)
        hint = f"; close: {', '.join(close)}" if close else "; see libai_vit.list_models()"
        raise ValueError(
            f"unknown model {arch!r} (timm's ViT/DeiT/DeiT III/DINOv2/CLIP/SigLIP/EVA-02 "
            f"names){hint}"
        )
    entry = MODELS[arch]
    if tag and tag not in entry["pretrained_tags"]:
        tags = ", ".join(sorted(entry["pretrained_tags"])) or "none"
        raise ValueError(f"unknown pretrained tag {tag!r} of {arch} (timm's tags: {tags})")
    return entry


def _pretrained_cfg(name):
    """timm's pretrained config of `name`: its tag's, or the architecture's default."""
    arch, tag = _split_tag(name)
    entry = _entry(name)
    cfg = entry["pretrained_tags"][tag] if tag else entry["pretrained_cfg"]
    return dict(cfg, architecture=arch, tag=tag or None)


def model_kwargs(name, **overrides):
    """The kwargs of timm model `name`, with timm-style overrides (num_classes, img_size, ...)."""
    return {**_entry(name)["kwargs"], **overrides}


OUTPUTS = ("dict", "tensor")


def create_model(
    name,
    pretrained=None,
    trust=False,
    strict=True,
    output="dict",
    features_only=False,
    out_indices=3,
    feature_cfg=None,
    **kwargs,
):
    """Build timm model `name` on the current layout (1x1x1 without a launcher), like timm's.

    `pretrained`: a checkpoint file (timm's, the families' release formats, DeiT/MAE/JAX, or this
    project's) loaded into the model, resampling the position embedding when img_size differs and
    dropping the head when num_classes differs; `trust=True` allows .pth pickles beyond
    plain tensors.
    `output`: what `model(x)` returns: "dict" (LiBai's, what its trainer and evaluator take:
    {"losses": ...} with labels in train mode, else {"prediction_scores": ...}) or "tensor" (timm's:
    the logits, in either mode).
    `features_only`: a backbone (timm's, for ViTs): the model returns the list of the
    `out_indices` blocks' feature maps (an int n: the last n; default 3), NCHW unless
    `feature_cfg=dict(output_fmt="NLC")`, the final norm applied with `feature_cfg=dict(norm=True)`;
    `.feature_info` says their channels and reductions.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output={output!r} must be one of {OUTPUTS}")
    build = pretrained_eva if _entry(name)["arch"] == "eva" else pretrained_vit
    model = build(pretrained, trust=trust, strict=strict, **model_kwargs(name, **kwargs))
    model.output = output
    model.pretrained_cfg = _pretrained_cfg(name)
    if features_only:
        model = FeatureGetterNet(model, out_indices=out_indices, **(feature_cfg or {}))
        model.pretrained_cfg = model.default_cfg = model.model.pretrained_cfg
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
