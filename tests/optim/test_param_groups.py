"""Layer-wise lr decay groups: which parameter gets which lr scale and weight decay, and that
OneFlow's AdamW with the warm-up/cosine schedule keeps the per-group ratios (LiBai's WarmupCosineLR
refuses them)."""

import numpy as np
import pytest

import libai_vit  # noqa: F401
from libai_vit.models.eva import Eva
from libai_vit.models.vision_transformer import VisionTransformer
from libai_vit.optim import group_parameters, layer_decay_param_groups

from conftest import tiny_vit


@pytest.fixture(scope="module")
def model():
    return tiny_vit(
        img_size=16,
        patch_size=4,
        num_classes=5,
        embed_dim=16,
        depth=3,
        num_heads=2,
        mlp_ratio=2.0,
        global_pool="avg",
    )


def _by_name(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in groups for p in g["params"]}


def _layer_before_group_matcher(name, depth):
    """The layer ids before they came from group_matcher (BEiT's and MAE's): 0 the embeddings, i + 1
    block i, depth + 1 everything after the blocks."""
    if name.startswith(("patch_embed.", "cls_token", "pos_embed", "reg_token", "norm_pre.")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


SMALL = dict(img_size=16, patch_size=4, num_classes=5, embed_dim=16, depth=3, num_heads=2)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),  # class token, final norm
        dict(global_pool="avg"),  # fc_norm
        dict(class_token=False, global_pool="map"),  # attention pool (SigLIP)
        dict(reg_tokens=2, no_embed_class=True, init_values=0.1),  # DINOv2 with registers
        dict(pre_norm=True, num_classes=0),  # CLIP: norm_pre, no head
        dict(eva=True, use_rot_pos_emb=True, swiglu_mlp=True),  # EVA-02
    ],
    ids=["token", "avg", "map", "reg", "pre_norm", "eva"],
)
def test_group_matcher_layers_are_the_layer_decay_layers_of_before(kwargs):
    kwargs = dict(kwargs)
    cls = Eva if kwargs.pop("eva", False) else VisionTransformer
    vit = cls(**{**SMALL, **kwargs})
    layers = group_parameters(vit, vit.group_matcher())
    assert layers == {n: _layer_before_group_matcher(n, 3) for n, _ in vit.named_parameters()}


def test_group_parameters_follows_timms_matcher_semantics():
    """timm's ViT matcher (the final norm joins the last block via MATCH_PREV_GROUP) and a coarse
    one: the ids are the sorted distinct ordinals, numbered from 0."""
    vit = VisionTransformer(**SMALL)
    timm_matcher = dict(
        stem=r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre",
        blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
    )
    layers = group_parameters(vit, timm_matcher)
    assert layers["norm.weight"] == layers["blocks.2.mlp.dense_4h_to_h.bias"] == 3
    assert layers["head.weight"] == 4 and layers["pos_embed"] == 0
    coarse = dict(stem=r"^patch_embed", blocks=r"^blocks", other=None)
    layers = group_parameters(vit, coarse)
    assert layers["patch_embed.proj.weight"] == 0 and layers["blocks.1.input_layernorm.bias"] == 1
    assert layers["cls_token"] == layers["head.bias"] == 2  # unmatched: last


def test_lr_scale_and_weight_decay_per_parameter(model):
    groups = layer_decay_param_groups(model, lr=1.0, layer_decay=0.5, weight_decay=0.05)
    got = _by_name(model, groups)
    assert set(got) == {n for n, _ in model.named_parameters()}  # every parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    depth = 3
    expect_lr = {
        "patch_embed.proj.weight": 0.5**4,
        "cls_token": 0.5**4,
        "pos_embed": 0.5**4,
        "blocks.0.self_attention.query_key_value.weight": 0.5**3,
        "blocks.2.mlp.dense_4h_to_h.bias": 0.5**1,
        "fc_norm.weight": 1.0,
        "head.weight": 1.0,
        "head.bias": 1.0,
    }
    for name, lr in expect_lr.items():
        assert got[name]["lr"] == pytest.approx(lr), name
    for name, group in got.items():
        no_decay = name in ("cls_token", "pos_embed") or name.endswith("bias") or "norm" in name
        assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert len(groups) == 2 * (depth + 2)  # decay / no decay per layer
    assert "clip_grad_max_norm" not in groups[0]


def test_optimizer_and_schedule_keep_the_ratios(model):
    import oneflow as flow
    from libai.scheduler import WarmupCosineLR

    from libai_vit.optim import warmup_cosine_lr

    groups = layer_decay_param_groups(
        model, lr=1e-3, layer_decay=0.75, weight_decay=0.05, clip_grad_max_norm=1.0
    )
    assert all(g["clip_grad_max_norm"] == 1.0 and g["clip_grad_norm_type"] == 2.0 for g in groups)
    opt = flow.optim.AdamW(groups, lr=123.0, weight_decay=0.5)  # the groups' own lr/wd win
    with pytest.raises(ValueError, match="different warmup configs"):
        WarmupCosineLR(opt, max_iter=100, warmup_factor=0.001, warmup_iter=10, alpha=0.01)
    sched = warmup_cosine_lr(opt, max_iter=100, warmup_factor=0.001, warmup_iter=10, alpha=0.01)
    seen = []
    for _ in range(100):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    seen = np.array(seen)
    peak = np.array([g["lr"] for g in groups])
    assert np.allclose(seen[0], peak * 0.001)  # warm-up start
    assert np.allclose(seen[10], peak)  # warm-up end: every group at its own peak
    assert np.allclose(seen / seen[:, -1:], peak / peak[-1])  # ratios kept at every step
    # cosine down to ~alpha
    assert np.all(np.diff(seen[10:, 0]) <= 0) and seen[-1, 0] < 0.02 * peak[0]
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}


def test_the_base_configs_groups_take_the_models_no_weight_decay():
    """configs/common/optim.py: LiBai's groups (biases and norms without weight decay) and the
    model's no_weight_decay() names, register tokens included."""
    from libai.config import instantiate
    from libai.optim import get_default_optimizer_params

    from libai_vit.config import load_config

    params_cfg = load_config("configs/demo_digits_3d.py").optim.params
    for reg_tokens in (0, 2):
        small = dict(img_size=16, patch_size=4, num_classes=5, embed_dim=16, depth=2, num_heads=2)
        vit = VisionTransformer(reg_tokens=reg_tokens, **small)
        params_cfg.model = vit
        by_name = _by_name(vit, instantiate(params_cfg))
        for name in by_name:
            no_decay = name in vit.no_weight_decay() or name.endswith("bias") or "norm" in name
            assert by_name[name].get("weight_decay") == (0.0 if no_decay else None), name
        # without registers, the groups LiBai's configs build with the names written out
        if not reg_tokens:
            written = get_default_optimizer_params(
                vit,
                weight_decay_norm=0.0,
                weight_decay_bias=0.0,
                clip_grad_max_norm=1.0,
                clip_grad_norm_type=2.0,
                overrides={"pos_embed": {"weight_decay": 0.0}, "cls_token": {"weight_decay": 0.0}},
            )
            assert _by_name(vit, written) == by_name
