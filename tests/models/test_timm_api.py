"""timm's model API on one tiny model of every family, modelled on timm's tests/test_models.py:
forward and backward (every parameter gets a gradient), reset_classifier, get_classifier,
forward_head, num_features."""

import numpy as np
import oneflow as flow
import pytest

from libai_vit import create_model

# one zoo name per family, shrunk (timm's test does the same with its small models)
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
FAMILIES = {
    "vit": ("vit_tiny_patch16_224", {}),
    "vit_avg": ("vit_medium_patch16_gap_240", {}),
    "deit3": ("deit3_small_patch16_224", {}),
    "dinov2_reg": ("vit_small_patch14_reg4_dinov2", {}),
    "clip": ("vit_base_patch16_clip_quickgelu_224", {}),
    "siglip": ("vit_base_patch16_siglip_224", {}),
    "eva02": ("eva02_tiny_patch14_224", dict(ref_feat_shape=(4, 4))),
    "eva02_e": ("eva02_enormous_patch14_clip_224", {}),
    "aimv2": ("aimv2_large_patch14_224", {}),
    "intern300m": ("vit_intern300m_patch14_448", {}),
}
PREFIX = {
    "vit": 1,
    "vit_avg": 0,
    "deit3": 1,
    "dinov2_reg": 5,
    "clip": 1,
    "siglip": 0,
    "eva02": 1,
    "eva02_e": 1,
    "aimv2": 0,
    "intern300m": 1,
}


def build(family, **kwargs):
    name, extra = FAMILIES[family]
    return create_model(name, **{**TINY, **extra, **kwargs})


def images(batch=2, size=32, seed=0):
    return flow.tensor(
        np.random.default_rng(seed).normal(size=(batch, 3, size, size)), dtype=flow.float32
    )


def local(t):
    return t.to_global(sbp=[flow.sbp.broadcast] * len(t.sbp)).to_local().numpy()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param


def test_forward_and_backward_reach_every_parameter(family):
    model = build(family).train()
    out = model(images(), flow.tensor([0, 3]))
    out["losses"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    model.eval()
    with flow.no_grad():
        logits = model(images())["prediction_scores"]
    assert tuple(logits.shape) == (2, 5) and np.isfinite(local(logits)).all()


def test_features_and_prefix_tokens(family):
    model = build(family)
    assert model.num_features == model.head_hidden_size == model.embed_dim == 32
    assert model.num_prefix_tokens == PREFIX[family]
    assert model.get_classifier() is model.head
    with flow.no_grad():
        tokens = model.forward_features(images())
        assert tuple(tokens.shape) == (2, PREFIX[family] + 16, 32)
        pooled = model.forward_head(tokens, pre_logits=True)
        assert tuple(pooled.shape) == (2, 32)
        np.testing.assert_allclose(
            local(model.forward_head(tokens)), local(model.head(pooled)), rtol=0, atol=1e-6
        )


def test_reset_classifier(family):
    model = build(family).eval()
    head = model.get_classifier()
    with flow.no_grad():
        before = local(model(images())["prediction_scores"])
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), flow.nn.Identity) and model.num_classes == 0
        pooled = model(images())["prediction_scores"]
        assert tuple(pooled.shape) == (2, model.num_features)
        model.reset_classifier(7)
        assert tuple(model(images())["prediction_scores"].shape) == (2, 7)
        new = model.get_classifier()
        assert not new.training  # the mode of the model it joins
        assert (new.weight.placement, new.weight.sbp) == (head.weight.placement, head.weight.sbp)
        assert (new.bias.placement, new.bias.sbp) == (head.bias.placement, head.bias.sbp)
        # a head of the constructed size is initialised as at construction (same seed, same rule)
        model.reset_classifier(5)
        np.testing.assert_array_equal(local(model.head.weight), local(head.weight))
        np.testing.assert_allclose(local(model(images())["prediction_scores"]), before, atol=1e-6)


def test_reset_classifier_global_pool():
    model = build("vit").eval()
    with flow.no_grad():
        tokens = model.forward_features(images())
        model.reset_classifier(0, "")  # no pooling: the tokens go through
        np.testing.assert_array_equal(local(model.forward_head(tokens)), local(tokens))
        model.reset_classifier(3, "avg")
        expected = model.head(tokens[:, 1:].mean(dim=1))
        np.testing.assert_allclose(local(model.forward_head(tokens)), local(expected), atol=1e-6)
    with pytest.raises(ValueError, match="cannot add attention pooling"):
        model.reset_classifier(3, "map")
    with pytest.raises(ValueError, match="must be one of"):
        model.reset_classifier(3, "gem")
    siglip = build("siglip")
    with pytest.raises(ValueError, match="needs the class token"):
        siglip.reset_classifier(3, "token")
    siglip.reset_classifier(3, "map")
    assert siglip.attn_pool is not None
    siglip.reset_classifier(3, "avg")  # drops the attention pool, as timm's
    assert siglip.attn_pool is None and siglip.global_pool == "avg"


def test_output_tensor_is_timms_logits():
    as_dict = build("vit").eval()
    as_tensor = build("vit", output="tensor").eval()
    assert as_dict.output == "dict" and as_tensor.output == "tensor"
    with flow.no_grad():
        logits = as_tensor(images())
        np.testing.assert_array_equal(local(logits), local(as_dict(images())["prediction_scores"]))
    as_tensor.train()
    logits = as_tensor(images())  # a timm user's training step (the logits are global tensors)
    labels = flow.tensor([0, 1]).to_global(placement=logits.placement, sbp=logits.sbp)
    flow.nn.functional.cross_entropy(logits, labels).backward()
    assert as_tensor.head.weight.grad is not None
    with pytest.raises(ValueError, match="returns the logits only"):
        as_tensor(images(), flow.tensor([0, 1]))
    with pytest.raises(ValueError, match="must be one of"):
        build("vit", output="logits")


def _train_steps(checkpointing, graph, steps=3, **how):
    """Per-step losses and the last gradients of a tiny ViT trained by SGD, eager or nn.Graph;
    `how`: set_grad_checkpointing's granularity and every."""
    from libai.models.utils import GraphBase

    from libai_vit import parallel

    model = build("dinov2_reg", init_seed=1).train()
    model.set_grad_checkpointing(checkpointing, **how)
    opt = flow.optim.SGD(model.parameters(), lr=0.1)
    x = parallel.to_stage(images(batch=4), parallel.FIRST)
    y = parallel.to_stage(flow.tensor([0, 1, 2, 3]), parallel.LAST)
    losses, grads, plan = [], {}, ""
    if graph:
        train = GraphBase(model, opt, None, is_train=True)
        for _ in range(steps):
            losses.append(float(train(images=x, labels=y)["losses"].to_local().numpy()))
        plan = str(train._full_graph_proto)
    else:
        for _ in range(steps):
            loss = model(x, y)["losses"]
            loss.backward()
            grads = {n: local(p.grad).copy() for n, p in model.named_parameters()}
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.to_local().numpy()))
    return losses, grads, plan


def test_grad_checkpointing_eager_same_losses_and_gradients():
    calls = []
    model = build("vit").train()
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    model.blocks[0].register_forward_hook(lambda *_: calls.append(1))
    model(images(), flow.tensor([0, 1]))["losses"].backward()
    assert len(calls) == 2  # the forward pass, then the recomputation in backward
    plain, plain_grads, _ = _train_steps(False, graph=False)
    recomputed, recomputed_grads, _ = _train_steps(True, graph=False)
    assert recomputed == plain
    for name, grad in plain_grads.items():
        np.testing.assert_allclose(recomputed_grads[name], grad, rtol=0, atol=1e-7, err_msg=name)


def test_grad_checkpointing_eager_replays_drop_path_and_dropout():
    """The recomputation draws the forward's masks (the random states replayed)."""
    x, y = images(batch=4), flow.tensor([0, 1, 2, 0])
    grads = []
    for checkpointing in (False, True):
        model = build("vit", init_seed=1, drop_path_rate=0.5, drop_rate=0.3).train()
        model.set_grad_checkpointing(checkpointing)
        flow.manual_seed(5)
        model(x, y)["losses"].backward()
        grads.append({n: local(p.grad).copy() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        np.testing.assert_allclose(grads[1][name], grad, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("granularity", ["block", "attention"])
def test_grad_checkpointing_every_kth_block_or_its_attention_eager(granularity):
    calls = {}
    model = build("vit", depth=3).train()
    model.set_grad_checkpointing(granularity=granularity, every=2)
    for i, block in enumerate(model.blocks):
        for part, module in (("block", block), ("attention", block.self_attention)):
            module.register_forward_hook(lambda *_, k=(i, part): calls.setdefault(k, []).append(1))
    model(images(), flow.tensor([0, 1]))["losses"].backward()
    runs = {k: len(v) for k, v in calls.items()}
    # blocks 0 and 2 recompute their `granularity` part in backward (a second run); block 1 none
    for i in range(3):
        recomputed = i % 2 == 0
        assert runs[(i, "attention")] == (2 if recomputed else 1), (i, runs)
        assert runs[(i, "block")] == (2 if recomputed and granularity == "block" else 1), runs
    plain, plain_grads, _ = _train_steps(False, graph=False)
    recomputed, grads, _ = _train_steps(True, graph=False, granularity=granularity, every=2)
    assert recomputed == plain
    for name, grad in plain_grads.items():
        np.testing.assert_allclose(grads[name], grad, rtol=0, atol=1e-7, err_msg=name)


def test_grad_checkpointing_attention_in_graph_same_losses():
    plain, _, _ = _train_steps(False, graph=True)
    recomputed, _, plan = _train_steps(True, graph=True, granularity="attention")
    assert recomputed == plain
    assert "Checkpointing" in plan


def test_grad_checkpointing_refuses_what_it_cannot_do():
    model = build("vit")
    with pytest.raises(ValueError, match="granularity='core'"):
        model.set_grad_checkpointing(granularity="core")
    with pytest.raises(ValueError, match="every=0"):
        model.set_grad_checkpointing(every=0)
    parallel_blocks = build("vit", block_fn="parallel_scaling")
    with pytest.raises(ValueError, match="attention cannot be recomputed alone"):
        parallel_blocks.set_grad_checkpointing(granularity="attention")


def test_grad_checkpointing_in_graph_same_losses():
    plain, _, plain_plan = _train_steps(False, graph=True)
    recomputed, _, plan = _train_steps(True, graph=True)
    assert recomputed == plain
    # OneFlow's checkpointing pass rewrites the plan only when the blocks are marked
    assert "Checkpointing" in plan and "Checkpointing" not in plain_plan


def test_forward_intermediates_shapes(family):
    model = build(family, depth=3).eval()
    n = PREFIX[family]
    with flow.no_grad():
        final, maps = model.forward_intermediates(images())
        assert tuple(final.shape) == (2, n + 16, 32) and len(maps) == 3
        assert all(tuple(m.shape) == (2, 32, 4, 4) for m in maps)
        np.testing.assert_allclose(local(final), local(model.forward_features(images())), atol=1e-6)
        only = model.forward_intermediates(images(), indices=[0, -1], intermediates_only=True)
        assert len(only) == 2
        np.testing.assert_array_equal(local(only[1]), local(maps[2]))
        tokens = model.forward_intermediates(
            images(), indices=1, output_fmt="NLC", return_prefix_tokens=True
        )[1]
        if n:
            ((spatial, prefix),) = tokens
            assert tuple(prefix.shape) == (2, n, 32)
        else:
            (spatial,) = tokens  # no prefix tokens: nothing to return beside the features
        assert tuple(spatial.shape) == (2, 16, 32)
        dino = model.get_intermediate_layers(images(), n=2, norm=True)  # DINO's interface
        expected = model.forward_intermediates(
            images(), indices=2, norm=True, output_fmt="NLC", intermediates_only=True
        )
        assert len(dino) == 2 and tuple(dino[0].shape) == (2, 16, 32)
        np.testing.assert_array_equal(local(dino[1]), local(expected[1]))
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(images(), indices=[3])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(images(), output_fmt="NHWC")


def test_prune_intermediate_layers(family):
    model = build(family, depth=3).eval()
    with flow.no_grad():
        maps = model.forward_intermediates(images(), indices=[0, 1], intermediates_only=True)
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        assert len(model.blocks) == 2 and model.num_classes == 0 and model.attn_pool is None
        pruned = model.forward_intermediates(images(), indices=[0, 1], intermediates_only=True)
        for a, b in zip(maps, pruned):
            np.testing.assert_array_equal(local(a), local(b))
        assert tuple(model(images())["prediction_scores"].shape) == (2, PREFIX[family] + 16, 32)


def test_features_only(family):
    name, extra = FAMILIES[family]
    full = build(family, depth=4).eval()
    backbone = create_model(
        name, features_only=True, out_indices=(1, 3), **{**TINY, **extra, "depth": 4}
    )
    backbone.eval()
    info = backbone.feature_info
    assert info.channels() == [32, 32] and info.reduction() == [8, 8]
    assert info.module_name() == ["blocks.1", "blocks.3"]
    assert backbone.pretrained_cfg["architecture"] == name
    with flow.no_grad():
        maps = backbone(images())
        expected = full.forward_intermediates(images(), indices=(1, 3), intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(2, c, 4, 4) for c in info.channels()]
    for a, b in zip(maps, expected):
        np.testing.assert_allclose(local(a), local(b), atol=1e-6)
    last3 = create_model(name, features_only=True, **{**TINY, **extra, "depth": 4})
    assert last3.feature_info.module_name() == ["blocks.1", "blocks.2", "blocks.3"]
    assert len(last3.model.blocks) == 4 and isinstance(last3.model.head, flow.nn.Identity)


def test_default_cfg(family):
    """timm's test_model_default_cfgs: the config names the model's first conv and classifier,
    its input size is the model's, and pooled features have num_features channels."""
    model = build(family).eval()
    cfg = model.default_cfg
    assert cfg == model.pretrained_cfg and cfg["architecture"] == FAMILIES[family][0]
    for key in ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation"):
        assert key in cfg, key
    assert cfg["input_size"] == (3, 32, 32) and len(cfg["mean"]) == len(cfg["std"]) == 3
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    assert state[cfg["first_conv"] + ".weight"].shape[1] == cfg["input_size"][0]
    assert dict(model.named_modules())[cfg["classifier"]].out_features == model.num_classes
    with flow.no_grad():
        x = images(size=cfg["input_size"][-1])
        assert tuple(model.forward_head(model.forward_features(x), pre_logits=True).shape) == (
            2,
            model.num_features,
        )
        model.reset_classifier(0)
        assert cfg["classifier"] + ".weight" not in model.state_dict()
        assert tuple(model(x)["prediction_scores"].shape) == (2, model.num_features)


def test_post_norm_blocks_refuse_what_they_have_not():
    """EVA-02-E's post-norm blocks have no LayerScale and no qk-norm: one line naming the option."""
    with pytest.raises(ValueError, match="has no qk_norm .* drop qk_norm"):
        build("eva02_e", qk_norm=True)
    with pytest.raises(ValueError, match="has no LayerScale .* drop init_values"):
        create_model("vit_tiny_patch16_224", block_fn="res_post", init_values=1e-5, **TINY)
    # as timm's EvaBlockPostNorm, the Eva argument init_values is accepted and ignored
    keys = build("eva02_e", init_values=1e-5).state_dict()
    assert not [k for k in keys if k.endswith(".gamma")]
