"""Write libai_vit/models/timm_zoo.json: every timm ViT / DeiT / DeiT III / DINOv2 / CLIP / SigLIP /
EVA-02 model name whose architecture libai_vit builds, with its kwargs in libai_vit's terms and
timm's pretrained config (input size, normalisation, crop, classifier: PRETRAINED_CFG_KEYS), of its
default and of each pretrained tag timm has weights for.

Regenerate with the timm venv of generators/make_timm_fixtures.py (the project venv has no timm):

    .venv-timm/bin/python generators/make_timm_zoo.py

timm's entry points are called with its model-building functions replaced by one that records the
kwargs, so no model is built. A model is left out when one of its kwargs has no counterpart here
(the list of those is printed, with the reason).
"""

import functools
import inspect
import json
import os
import sys

import timm_venv  # noqa: F401  (declares torchvision's ops: before timm is imported)
import torch

# isort: split
import timm  # noqa: E402
from timm.layers import RmsNorm, SwiGLU, SwiGLUPacked  # noqa: E402
from timm.models import deit, eva, vision_transformer  # noqa: E402
from timm.models._registry import (  # noqa: E402
    _model_entrypoints,
    _model_has_pretrained,
    _model_with_tags,
    get_pretrained_cfg,
)
from timm.models.vision_transformer import ParallelScalingBlock, ParallelThingsBlock  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "libai_vit", "models", "timm_zoo.json")
FAMILIES = ("vit_", "deit_", "deit3_", "eva02_", "aimv2_")
# kwargs with the same name and meaning here: those both families share, then each one's own
SHARED = (
    "img_size patch_size in_chans num_classes global_pool embed_dim depth num_heads mlp_ratio "
    "qkv_bias qk_norm init_values class_token no_embed_class dynamic_img_size"
).split()
SAME = {
    "vit": {
        *SHARED,
        "reg_tokens",
        "pre_norm",
        "fc_norm",
        "scale_attn_norm",
        "proj_bias",
        "final_norm",
    },
    "eva": {
        *SHARED,
        "num_reg_tokens",
        "use_abs_pos_emb",
        "use_rot_pos_emb",
        "ref_feat_shape",
        "swiglu_mlp",
        "scale_mlp",
        "qkv_fused",
        "use_pre_transformer_norm",
        "scale_attn_inner",
        "use_fc_norm",
        "rope_temperature",
        "rope_rotate_half",
        "swiglu_align_to",
        "use_post_norm",
        "rope_grid_offset",
        "rope_grid_indexing",
        "attn_pool_num_heads",
        "attn_pool_mlp_ratio",
        "use_post_transformer_norm",
    },
}
ROPE_TYPES = ("cat", "dinov3")  # timm's rope_type values built here
IGNORED = {"weight_init"}  # initialisation of a model trained from scratch in timm only


# what data pipelines and heads read from timm's pretrained config (timm's names)
PRETRAINED_CFG_KEYS = (
    "input_size mean std crop_pct crop_mode interpolation num_classes classifier first_conv"
).split()


def pretrained_cfg(name):
    """The PRETRAINED_CFG_KEYS of timm's pretrained config for `name` (its default tag)."""
    cfg = get_pretrained_cfg(name).to_dict()
    return {k: list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k] for k in PRETRAINED_CFG_KEYS}


def pretrained_tags(name):
    """{tag: its pretrained config} for each pretrained tag of `name` timm has weights for."""
    tagged = [t for t in _model_with_tags.get(name, ()) if t in _model_has_pretrained]
    return {t.split(".", 1)[1]: pretrained_cfg(t) for t in tagged}


class Unsupported(Exception):
    pass


def _norm(norm_layer):
    """(our norm_layer name, eps) of timm's norm_layer (a class or a partial of one)."""
    func = norm_layer.func if isinstance(norm_layer, functools.partial) else norm_layer
    if func is RmsNorm:
        eps = getattr(norm_layer, "keywords", {}).get("eps")
        return "rmsnorm", eps if eps is not None else inspect.signature(RmsNorm).parameters[
            "eps"
        ].default
    return "layernorm", _norm_eps(norm_layer)


def _norm_eps(norm_layer):
    if isinstance(norm_layer, functools.partial):
        if "eps" in norm_layer.keywords:
            return norm_layer.keywords["eps"]
        norm_layer = norm_layer.func
    if isinstance(norm_layer, type) and issubclass(norm_layer, torch.nn.LayerNorm):
        return inspect.signature(norm_layer).parameters["eps"].default
    raise Unsupported(f"norm_layer={norm_layer!r}")


def _act(act_layer):
    if isinstance(act_layer, str):
        name = act_layer
    else:
        name = {torch.nn.GELU: "gelu", torch.nn.SiLU: "silu", torch.nn.ReLU: "relu"}.get(act_layer)
        if name is None and getattr(act_layer, "__name__", "") == "QuickGELU":
            name = "quick_gelu"
    if name not in ("gelu", "quick_gelu", "gelu_tanh", "silu", "relu"):
        raise Unsupported(f"act_layer={act_layer!r}")
    return name


def translate(arch, kwargs):
    ours = {}
    for key, value in kwargs.items():
        if key in IGNORED:
            continue
        if key in SAME[arch]:
            ours[key] = list(value) if isinstance(value, tuple) else value
        elif key == "norm_layer":
            name, ours["norm_eps"] = _norm(value)
            if name != "layernorm":
                ours["norm_layer"] = name
        elif key == "act_layer":
            ours["act_layer"] = _act(value)
        elif key == "block_fn" and arch == "vit" and value is ParallelScalingBlock:  # ViT-22B
            ours["block_fn"] = "parallel_scaling"
        elif key == "block_fn" and arch == "vit" and value is ParallelThingsBlock:  # *_18x2_*
            ours["block_fn"] = "parallel_things"
        elif key == "mlp_layer" and value is SwiGLUPacked:  # DINOv2 giant
            ours["mlp_layer"] = "swiglu_packed"
        elif key == "mlp_layer" and arch == "vit" and value is SwiGLU:  # AIMv2
            ours["mlp_layer"] = "swiglu"
        elif key == "embed_norm_layer" and arch == "vit":  # AIMv2: its eps is the blocks' norms'
            ours["embed_norm_layer"], eps = _norm(value)
            if eps != _norm(kwargs.get("norm_layer", torch.nn.LayerNorm))[1]:
                raise Unsupported(f"embed_norm_layer={value!r} (an eps of its own)")
        elif key == "attn_type" and arch == "eva" and value in ("eva", "rope"):  # PE: 'rope'
            ours["attn_type"] = value
        elif key == "rope_type" and arch == "eva" and value in ROPE_TYPES:
            ours["rope_type"] = value
        else:
            raise Unsupported(f"{key}={value!r}")
    return ours


def record(arch, store):
    def create(variant, pretrained=False, **kwargs):
        store[variant] = (arch, kwargs)

    return create


def main():
    store, skipped = {}, {}
    vision_transformer._create_vision_transformer = record("vit", store)
    eva._create_eva = record("eva", store)

    def create_deit(variant, pretrained=False, distilled=False, **kwargs):
        if distilled:
            skipped[variant] = "distilled (dist_token)"
        else:
            store[variant] = ("vit", kwargs)

    deit._create_deit = create_deit
    zoo = {}
    for name in sorted(_model_entrypoints):
        if not name.startswith(FAMILIES) or name.startswith(("vit_relpos", "vit_srelpos")):
            continue
        try:
            _model_entrypoints[name](pretrained=False)
        # an entry point of another class (hybrid, NaFlex...) fails on the stub
        except Exception as e:
            skipped[name] = f"{type(e).__name__}: {e}"
            continue
        if name not in store:
            skipped.setdefault(name, "not built by VisionTransformer or Eva")
            continue
        arch, kwargs = store.pop(name)
        try:
            ours = translate(arch, kwargs)
        except Unsupported as e:
            skipped[name] = str(e)
            continue
        cfg = get_pretrained_cfg(name)
        if "img_size" not in ours and cfg is not None:
            ours["img_size"] = cfg.input_size[-1]
        zoo[name] = dict(arch=arch, kwargs=ours, pretrained_cfg=pretrained_cfg(name))
        zoo[name]["pretrained_tags"] = pretrained_tags(name)
    with open(OUT, "w") as f:
        json.dump(zoo, f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"{len(zoo)} models written to {os.path.normpath(OUT)}; {len(skipped)} left out:")
    for name, why in sorted(skipped.items()):
        print(f"  {name}: {why}", file=sys.stderr)
    print(f"timm {timm.__version__}")


if __name__ == "__main__":
    main()
