"""The same ViT, seed, global batch and data order give the same per-step losses on every layout.

Each case launches real OneFlow processes (CPU) through tools/train.sh and reads metrics.json.
"""

import math

import pytest

from conftest import train_losses

CONFIG = "configs/demo_digits_3d.py"
STEPS = 6
GLOBAL_BATCH = 16


def _overrides(digits_root, dp, tp, pp, micro, acc, graph=True, extra=()):
    return [
        f"train.dist.data_parallel_size={dp}",
        f"train.dist.tensor_parallel_size={tp}",
        f"train.dist.pipeline_parallel_size={pp}",
        f"train.train_micro_batch_size={micro}",
        f"train.num_accumulation_steps={acc}",
        f"train.train_iter={STEPS}",
        "train.evaluation.enabled=False",
        "train.checkpointer.period=100000",
        "train.log_period=1",
        f"graph.enabled={graph}",
        f"dataloader.train.dataset.0.root={digits_root}",
        f"dataloader.test.0.dataset.root={digits_root}",
        # a constant learning rate: LiBai's eager trainer steps its scheduler per micro-batch, so
        # under accumulation a warm-up/cosine schedule would differ from graph mode's per step
        "train.scheduler.warmup_factor=1.0",
        "train.scheduler.alpha=1.0",
        "optim.lr=2e-3",
        *extra,
    ]


def _max_rel_diff(a, b):
    assert len(a) == len(b) == STEPS, (a, b)
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def reference(digits_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return train_losses(out, CONFIG, 1, _overrides(digits_root, 1, 1, 1, GLOBAL_BATCH, 1))


LAYOUTS = {  # name: (dp, tp, pp, micro, accumulation, graph, extra overrides)
    "dp2": (2, 1, 1, 8, 1, True, ()),
    "tp2": (1, 2, 1, 16, 1, True, ()),
    # micro-batch 1 at TP=2 (what giant models train with); evaluation at micro-batch 1 too
    "tp2_micro1": (1, 2, 1, 1, 16, True, ("train.test_micro_batch_size=1",)),
    # sequence parallelism: the residual stream split along 17 tokens, padded to 18
    "tp2_sequence_parallel_eager": (1, 2, 1, 16, 1, False, ("train.dist.sequence_parallel=True",)),
    "dp2_tp2_sequence_parallel_eager": (
        2,
        2,
        1,
        8,
        1,
        False,
        ("train.dist.sequence_parallel=True",),
    ),
    "pp2_1f1b": (1, 1, 2, 8, 2, True, ()),
    "dp2_tp2_pp2": (2, 2, 2, 4, 2, True, ()),
    "pp2_uneven_3_1": (1, 1, 2, 4, 4, True, ("train.dist.pipeline_stage_layers=[3,1]",)),
    "pp2_activation_checkpointing": (
        1,
        1,
        2,
        8,
        2,
        True,
        ("train.activation_checkpoint.enabled=True",),
    ),
    "dp2_eager": (2, 1, 1, 8, 1, False, ()),
    "tp2_eager": (1, 2, 1, 16, 1, False, ()),
    "dp2_accumulation_eager": (2, 1, 1, 4, 2, False, ()),
    # eager pipeline: the stages run one after another (no 1F1B), each rank holding its stage only
    "pp2_eager": (1, 1, 2, 8, 2, False, ()),
    "dp2_tp2_pp2_eager": (2, 2, 2, 4, 2, False, ()),
    "dp2_tp2_pp2_sequence_parallel_eager": (
        2,
        2,
        2,
        4,
        2,
        False,
        ("train.dist.sequence_parallel=True",),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_matches_single_process(name, reference, digits_root, tmp_path):
    dp, tp, pp, micro, acc, graph, extra = LAYOUTS[name]
    assert dp * micro * acc == GLOBAL_BATCH
    losses = train_losses(
        tmp_path,
        CONFIG,
        dp * tp * pp,
        _overrides(digits_root, dp, tp, pp, micro, acc, graph, extra),
    )
    if not graph and acc > 1:  # eager accumulation logs every micro-batch: average each step's
        losses = [sum(losses[i : i + acc]) / acc for i in range(0, len(losses), acc)]
    diff = _max_rel_diff(losses, reference)
    print(f"parity {name}: max relative loss difference {diff:.2e}")
    assert diff < 1e-4


# the families' new pieces, each on the demo's small ViT: registers + LayerScale + no_embed_class
# (DINOv2 with registers), no class token + attention pooling (SigLIP), RoPE + SwiGLU with its norm
# + the attention's sub-LN + average pooling (EVA-02), DINOv3's RoPE (normalised grid, rotate-half)
# + registers + SwiGLU with swiglu_align_to (128 -> 144 hidden units) + no q/k/v bias, ViT-22B's
# parallel block (attention and MLP side by side, one reduction) with RMSNorm and qk-norm, the
# "three things" parallel block (two attentions summed, then two MLPs) with LayerScale, AIMv2's
# bias-free SwiGLU blocks with RMSNorm on the patch embeddings, here with InternViT-6B's qk-norm
# over the whole width (its statistics summed across the tensor-parallel ranks)
FAMILIES = {
    "dinov2_reg": ("model.reg_tokens=4", "model.no_embed_class=True", "model.init_values=0.5"),
    "siglip": ("model.class_token=False", "model.global_pool=map"),
    "eva02": (
        "model.use_rot_pos_emb=True",
        "model.ref_feat_shape=[4,4]",
        "model.mlp_layer=swiglu",
        "model.scale_mlp_norm=True",
        "model.scale_attn_norm=True",
        "model.global_pool=avg",
    ),
    "dinov3": (
        "model.use_rot_pos_emb=True",
        "model.use_abs_pos_emb=False",
        "model.rope_type=dinov3",
        "model.rope_temperature=100",
        "model.rope_rotate_half=True",
        "model.reg_tokens=4",
        "model.init_values=0.5",
        "model.mlp_layer=swiglu",
        "model.swiglu_align_to=48",
        "model.qkv_bias=False",
        "model.global_pool=avg",
        "model.fc_norm=False",
    ),
    "parallel_scaling": (
        "model.block_fn=parallel_scaling",
        "model.norm_layer=rmsnorm",
        "model.qk_norm=True",
        "model.qkv_bias=False",
        "model.pre_norm=True",
        "model.init_values=0.5",
    ),
    "parallel_things": ("model.block_fn=parallel_things", "model.init_values=0.5"),
    "aimv2": (
        "model.class_token=False",
        "model.global_pool=avg",
        "model.fc_norm=False",
        "model.norm_layer=rmsnorm",
        "model.embed_norm_layer=rmsnorm",
        "model.mlp_layer=swiglu",
        "model.act_layer=silu",
        "model.qkv_bias=False",
        "model.proj_bias=False",
        "model.qk_norm=True",
        "model.qk_norm_whole_width=True",
    ),
}
FAMILY_LAYOUTS = {"tp2": (1, 2, 1, 16, 1), "dp2_tp2_pp2": (2, 2, 2, 4, 2)}


@pytest.fixture(scope="module")
def family_reference(digits_root, tmp_path_factory):
    cache = {}

    def losses(family):
        if family not in cache:
            out = tmp_path_factory.mktemp(f"ref_{family}")
            cache[family] = train_losses(
                out,
                CONFIG,
                1,
                _overrides(digits_root, 1, 1, 1, GLOBAL_BATCH, 1, extra=FAMILIES[family]),
            )
        return cache[family]

    return losses


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(FAMILY_LAYOUTS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_layout_matches_single_process(
    family, layout, family_reference, digits_root, tmp_path
):
    dp, tp, pp, micro, acc = FAMILY_LAYOUTS[layout]
    losses = train_losses(
        tmp_path,
        CONFIG,
        dp * tp * pp,
        _overrides(digits_root, dp, tp, pp, micro, acc, extra=FAMILIES[family]),
    )
    diff = _max_rel_diff(losses, family_reference(family))
    print(f"parity {family} {layout}: max relative loss difference {diff:.2e}")
    assert diff < 1e-4


@pytest.mark.slow
def test_dropout_and_drop_path_train_and_stay_finite(digits_root, tmp_path):
    """At TP=2 with every dropout on, the loss stays finite and falls. "Falls" is measured against
    the run's own noise, not a fixed amount (the kernels, so the trajectory, differ by machine): the
    least-squares slope of the loss over the steps is below zero by more than 4 of its standard
    errors (measured: 9 to 16 over three seeds)."""
    import numpy as np

    steps = 80
    extra = (
        "model.drop_rate=0.1",
        "model.attn_drop_rate=0.1",
        "model.drop_path_rate=0.1",
        f"train.train_iter={steps}",
        "optim.lr=1e-3",
    )
    losses = train_losses(tmp_path, CONFIG, 2, _overrides(digits_root, 1, 2, 1, 32, 1, True, extra))
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    step = np.arange(steps)
    slope, intercept = np.polyfit(step, losses, 1)
    residuals = np.asarray(losses) - (intercept + slope * step)
    slope_error = residuals.std(ddof=2) / np.sqrt(((step - step.mean()) ** 2).sum())
    print(
        f"dropout run: loss slope {slope:.2e} per step, {slope / slope_error:.1f} standard errors"
    )
    assert slope < -4 * slope_error
