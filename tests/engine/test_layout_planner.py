"""The layout planner's model: FLOPs and parameter counts exactly, memory against launched runs."""

import os
import re
import subprocess
import sys

import pytest

from libai_vit.engine import layout_planner as planner

from conftest import ROOT


def test_vit_tiny_train_flops_match_the_published_count():
    # timm / DeiT: ViT-Ti/16 at 224 is 1.26 GMACs forward -> 2 x 3 x 1.26 = 7.5 GFLOP per image
    flops = planner.train_flops_per_image(planner.ViTShape(embed_dim=192, depth=12, num_heads=3))
    assert flops / 1e9 == pytest.approx(7.5, rel=0.03)


@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_parameter_counts_match_the_model(tp, pp):
    import libai_vit

    kwargs = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, num_classes=10)
    total = sum(p.numel() for p in libai_vit.VisionTransformer(**kwargs).parameters())
    shape = planner.ViTShape(**kwargs)
    assert sum(planner.parameter_counts(shape, 1, 1)) == total
    per_rank = planner.parameter_counts(shape, tp, pp)
    assert len(per_rank) == pp
    if tp == 1:  # PP partitions the parameters
        assert sum(per_rank) == total
    else:  # TP splits only the Linears' weights and column biases; each rank holds the rest
        assert sum(per_rank) * tp > total > sum(per_rank)


def test_planner_places_blocks_as_training_does():
    """The planner's stages are parallel.stage_of_layers', including
    train.dist.pipeline_stage_layers."""
    from libai_vit import parallel

    shape = planner.ViTShape(
        img_size=32, patch_size=8, embed_dim=64, depth=6, num_heads=4, num_classes=10
    )
    even = parallel.stage_of_layers(6, 2)
    assert planner.blocks_per_stage(shape, 2) == [even.count(0), even.count(1)]
    assert planner.blocks_per_stage(shape, 2, [5, 1]) == [5, 1]
    per_block = (
        planner.parameter_counts(shape, 1, 1, None)[0]
        - planner.parameter_counts(
            planner.ViTShape(
                img_size=32, patch_size=8, embed_dim=64, depth=5, num_heads=4, num_classes=10
            ),
            1,
            1,
        )[0]
    )
    uneven, balanced = (
        planner.parameter_counts(shape, 1, 2, [5, 1]),
        planner.parameter_counts(shape, 1, 2),
    )
    assert uneven[0] - balanced[0] == pytest.approx(2 * per_block)
    slow = planner.plan(shape, 1, 1, 2, 4, 4, stage_layers=[5, 1])
    # the 5-block stage sets the pace
    assert slow.step_s > planner.plan(shape, 1, 1, 2, 4, 4).step_s
    assert slow.act_bytes > planner.plan(shape, 1, 1, 2, 4, 4).act_bytes


def test_eager_pipeline_recomputation_and_sequence_parallelism_change_what_a_rank_keeps():
    base = planner.ViTShape(embed_dim=768, depth=12, num_heads=12)
    one = planner.activation_bytes(base, 1, 2, 4, 1, graph=False)
    # eager runs the stages one after another: one micro-batch in flight, whatever M; 1F1B keeps two
    assert planner.activation_bytes(base, 1, 2, 4, 4, graph=False) == one
    graph = planner.activation_bytes(base, 1, 2, 4, 4, graph_act_factor=1.0)
    assert graph == pytest.approx(2 * one)
    assert planner.plan(base, 1, 1, 2, 4, 4, graph=False).step_s > (
        planner.plan(base, 1, 1, 2, 4, 4).step_s
    )
    full = planner.activation_bytes(base, 1, 1, 4, 1, graph=False)
    every = planner.activation_bytes(base, 1, 1, 4, 1, graph=False, recompute=planner.Recompute())
    second = planner.activation_bytes(
        base, 1, 1, 4, 1, graph=False, recompute=planner.Recompute(every=2)
    )
    core = planner.activation_bytes(
        base, 1, 1, 4, 1, graph=False, recompute=planner.Recompute(granularity="attention")
    )
    assert every < second < full and every < core < full
    # a recomputed block keeps its input: 12 inputs and one block live again
    sbh = 197 * 4 * 768 * planner.BYTES
    assert every == pytest.approx(12 * sbh + full / 12)
    # nn.Graph on CPU adds the recomputed buffers instead of freeing
    assert planner.activation_bytes(base, 1, 1, 4, 1, recompute=planner.Recompute()) > (
        planner.activation_bytes(base, 1, 1, 4, 1)
    )
    tp2 = planner.activation_bytes(base, 2, 1, 4, 1, graph=False)
    assert planner.activation_bytes(base, 2, 1, 4, 1, graph=False, sequence_parallel=True) < tp2
    assert planner.activation_bytes(base, 1, 1, 4, 1, graph=False, sequence_parallel=True) == full
    plan = planner.plan(base, 1, 2, 2, 2, 2, graph=False)
    assert (
        planner.rank_peak_bytes(plan, graph=False) - plan.mem_bytes
        == (planner.PROCESS_BYTES["eager"])
    )


def test_planner_ranks_only_layouts_the_model_allows_and_explains_them():
    shape = planner.ViTShape(embed_dim=192, depth=12, num_heads=3)  # 3 heads: no TP=2
    plans = planner.enumerate_plans(shape, world=4, mem_bytes=2**40, global_batch=64)
    assert plans["fits"] and all(p.tp in (1,) for p in plans["fits"])
    assert all(p.dp * p.tp * p.pp == 4 for p in plans["fits"])
    steps = [p.step_s for p in plans["fits"]]
    assert steps == sorted(steps)
    pipeline = next(p for p in plans["fits"] if p.pp == 2)
    assert any("bubble" in note for note in pipeline.notes)
    tight = planner.enumerate_plans(shape, world=4, mem_bytes=300 * 2**20, global_batch=64)
    assert all(p.mem_bytes <= 300 * 2**20 for p in tight["fits"]) and tight["too_big"]


def test_plan_layout_tool_prints_a_ranked_table():
    cfg = os.path.join(ROOT, "configs", "common", "models", "vit", "vit_base_patch16_224.py")
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "plan_layout.py"),
            cfg,
            "--gpus",
            "8",
            "--mem-gb",
            "4",
            "--top",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if re.match(r"\s*\d+\s+\d+x\d+x\d+\s", line)]
    assert len(rows) == 5 and "fastest that fits" in rows[0]


# A model whose activations dominate a rank's fixed cost, small enough for a quick step on 2 cores.
MEM_MODEL = dict(embed_dim=192, depth=4, num_heads=6)
MEM_CASES = [  # (DP, TP, PP), micro-batch, micro-batches per step
    ((1, 1, 1), 16, 1),
    ((2, 1, 1), 8, 1),
    ((1, 2, 1), 16, 1),
    ((1, 1, 2), 8, 2),
]


@pytest.mark.slow
def test_memory_estimates_match_measured_peak_rss():
    """Peak RSS of each launched rank minus a model-less rank's, against the estimate (nn.Graph, the
    trainer's default), within 25%."""
    from benchmarks import training

    base = training.launch(
        dict(name="baseline", impl="baseline", layout=[1, 1, 1], depth=MEM_MODEL["depth"]), 300
    )
    base_mb = base[0]["peak_rss_mb"]
    shape = planner.ViTShape(**MEM_MODEL)
    misses = []
    for (dp, tp, pp), micro, num_micro in MEM_CASES:
        case = dict(
            name=f"mem {dp}x{tp}x{pp}",
            impl="ours",
            model="vit_tiny_patch16_224",
            overrides=MEM_MODEL,
            graph=True,
            layout=[dp, tp, pp],
            nproc=dp * tp * pp,
            micro_batch=micro,
            num_micro=num_micro,
            attn="math",
            warmup=1,
            steps=0,
        )
        measured = max(r["peak_rss_mb"] for r in training.launch(case, 600)) - base_mb
        estimate = planner.plan(shape, dp, tp, pp, micro, num_micro).mem_bytes / 2**20
        # 1F1B keeps at most min(M, PP) micro-batches' activations on the first stage, but OneFlow's
        # CPU runtime sometimes runs the stages nearly serially and keeps only one (measured: 889 MB
        # in one run, 721 MB in another, of this 1x1x2 case): the estimate is that upper bound, and
        # the one-in-flight figure is its lower end
        low = planner.plan(shape, dp, tp, pp, micro, 1).mem_bytes / 2**20 if pp > 1 else estimate
        print(f"{dp}x{tp}x{pp}: estimated {low:.0f}-{estimate:.0f} MB, measured {measured:.0f} MB")
        if not 0.75 * low <= measured <= 1.25 * estimate:
            misses.append(
                f"{dp}x{tp}x{pp} micro {micro}: estimated {low:.0f}-{estimate:.0f} MB, "
                f"measured {measured:.0f} MB"
            )
    assert not misses, "; ".join(misses)
