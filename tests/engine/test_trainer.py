"""The trainer builds the model the config describes: `train.activation_checkpoint` reaches the
model (LiBai's own switch marks only LiBai's TransformerLayer, which this ViT does not use)."""

import os

import pytest
from libai.config import LazyConfig

from conftest import ROOT


@pytest.mark.parametrize(
    "setting, expected",
    [
        (dict(enabled=False), (False, "block", 1)),
        (dict(enabled=True), (True, "block", 1)),
        (dict(enabled=True, granularity="attention", every=2), (True, "attention", 2)),
    ],
)
def test_activation_checkpoint_config_reaches_the_model(setting, expected):
    import libai_vit  # noqa: F401
    from libai_vit import parallel
    from libai_vit.engine.trainer import Trainer

    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "demo_digits_3d.py"))
    cfg.train.activation_checkpoint.update(setting)
    parallel.setup(cfg.train.dist, int(cfg.model.depth))
    model = Trainer.build_model(cfg)
    got = (
        model.grad_checkpointing,
        model.grad_checkpointing_granularity,
        model.grad_checkpointing_every,
    )
    assert got == expected
    attention_recomputed = [b.recompute_attention for b in model.blocks]
    assert attention_recomputed == [
        expected[0] and expected[1] == "attention" and i % expected[2] == 0
        for i in range(len(model.blocks))
    ]
