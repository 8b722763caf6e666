"""Layout rules and the validation that refuses layouts which cannot run."""

import numpy as np
import pytest

from libai_vit import parallel
from libai_vit.config import load_config, mlp_hidden_of, model_arguments

DEMO = "configs/demo_digits_3d.py"


def _cfg(*overrides):
    return load_config(DEMO, list(overrides))


@pytest.mark.parametrize(
    "overrides, nproc, message",
    [
        ((), 4, "2 x 2 x 2 = 8 processes, but 4 were launched"),
        (
            (
                "train.dist.tensor_parallel_size=3",
                "train.dist.data_parallel_size=1",
                "train.dist.pipeline_parallel_size=1",
            ),
            3,
            "num_heads=4 is not divisible by train.dist.tensor_parallel_size=3",
        ),
        (
            (
                "model.num_heads=2",
                "train.dist.tensor_parallel_size=4",
                "train.dist.data_parallel_size=1",
            ),
            8,
            "num_heads=2 is not divisible",
        ),
        (("model.mlp_ratio=1.03",), 8, "mlp hidden=65 is not divisible"),
        (("model.embed_dim=66", "model.num_heads=3"), 8, "num_heads=3 is not divisible"),
        (
            ("model.embed_dim=66", "model.num_heads=4"),
            8,
            "embed_dim=66 is not divisible by num_heads=4",
        ),
        (("model.depth=1",), 8, "depth=1 < train.dist.pipeline_parallel_size=2"),
        (("train.dist.pipeline_stage_layers=[3,2]",), 8, "must list 2 positive layer counts"),
        (("train.dist.pipeline_stage_layers=[4,0]",), 8, "must list 2 positive layer counts"),
        (
            ("train.global_batch_size=100",),
            8,
            "global_batch_size=100 != train_micro_batch_size x DP x num_accumulation_steps",
        ),
        (
            ("train.global_batch_size=40", "train.num_accumulation_steps=null"),
            8,
            "not divisible by train_micro_batch_size x DP",
        ),
        (
            ("train.dist.sequence_parallel=True",),
            8,
            "sequence_parallel=True at TP=2 does not run in graph mode",
        ),
    ],
)
def test_validation_names_the_problem(overrides, nproc, message):
    with pytest.raises(parallel.LayoutError) as err:
        cfg = _cfg(*overrides)
        parallel.validate(cfg, nproc, model_arguments(cfg), mlp_hidden_of(model_arguments(cfg)))
    assert message in str(err.value)


def test_heads_tensor_parallelism_cannot_split_are_refused_naming_the_sizes_that_do():
    # InternViT-6B's 25 heads (3200 wide, MLP 12800) at TP=2: no zero-head padding is built
    tp2 = ("train.dist.tensor_parallel_size=2", "train.dist.data_parallel_size=1")
    shape = ("model.embed_dim=3200", "model.num_heads=25", "model.mlp_ratio=4.0")
    with pytest.raises(parallel.LayoutError) as err:
        cfg = _cfg(*tp2, "train.dist.pipeline_parallel_size=1", *shape)
        parallel.validate(cfg, 2, model_arguments(cfg), mlp_hidden_of(model_arguments(cfg)))
    assert str(err.value) == (
        "model num_heads=25 is not divisible by train.dist.tensor_parallel_size=2: "
        "tensor_parallel_size 1 / 5 / 25 splits this model"
    )


def test_uneven_pipeline_splits_of_40_and_64_blocks():
    # DINOv2-g / DINOv3-7B (40 blocks) and 64-block models: even splits put the extra blocks last
    assert np.bincount(parallel.stage_of_layers(40, 3)).tolist() == [13, 13, 14]
    assert np.bincount(parallel.stage_of_layers(64, 6)).tolist() == [10, 10, 11, 11, 11, 11]
    assert np.bincount(parallel.stage_of_layers(40, 8, [4, 5, 5, 5, 5, 5, 5, 6])).tolist() == [
        4,
        5,
        5,
        5,
        5,
        5,
        5,
        6,
    ]


def test_valid_demo_layout_passes():
    cfg = _cfg()
    parallel.validate(cfg, 8, model_arguments(cfg), mlp_hidden_of(model_arguments(cfg)))


def test_even_split_puts_extra_layers_last():
    assert parallel.stage_of_layers(4, 2) == [0, 0, 1, 1]
    assert parallel.stage_of_layers(5, 2) == [0, 0, 1, 1, 1]
    assert parallel.stage_of_layers(7, 3) == [0, 0, 1, 1, 2, 2, 2]
    assert parallel.stage_of_layers(6, 2, [4, 2]) == [0, 0, 0, 0, 1, 1]


def test_data_parallel_rank_matches_the_stage_meshes():
    """Ranks at the same place of every stage's (DP, TP) mesh read the same data shard."""
    for dp, tp, pp in [(2, 2, 2), (2, 1, 2), (4, 1, 2), (2, 2, 1), (1, 2, 4)]:
        layout = parallel.Layout(dp, tp, pp)
        per_stage = dp * tp
        for stage in range(pp):
            mesh = np.arange(stage * per_stage, (stage + 1) * per_stage).reshape(dp, tp)
            for d in range(dp):
                for rank in mesh[d]:
                    assert layout.data_parallel_rank(int(rank)) == d, (dp, tp, pp, rank)


def test_libai_rule_was_wrong_for_dp_and_pp():
    """The bug this replaces: LiBai 0.1.1 gives rank 4 (stage 1, DP 0) the DP index 1."""
    assert 4 // (2 * 2) == 1 and parallel.Layout(2, 2, 2).data_parallel_rank(4) == 0
