"""The model EMA: timm's ModelEmaV3 decay schedule (recorded by generators/make_recipe_fixtures.py)
and its update; the whole recipe with EMA against timm is tests/projects/test_recipe_fidelity.py."""

import json
import os

import numpy as np
import oneflow as flow
import pytest

import libai_vit  # noqa: F401
from libai_vit.engine.ema import ModelEma

REFERENCE = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "fixtures", "recipes", "reference.json"
)


def test_decay_and_its_warmup_follow_timm():
    with open(REFERENCE) as f:
        cases = json.load(f)["ema_decay"]
    model = flow.nn.Linear(2, 2)
    for case in cases:
        ema = ModelEma(model, **case["kwargs"])
        assert [ema.get_decay(s) for s in range(len(case["decays"]))] == pytest.approx(
            case["decays"], rel=1e-12
        )


def test_update_moves_the_average_towards_the_model_and_leaves_the_model_alone():
    flow.manual_seed(0)
    model = flow.nn.Linear(3, 2)
    ema = ModelEma(model, decay=0.9)
    start = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with flow.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=1)  # the first update copies (decay 0)
    for k, v in ema.state_dict().items():
        np.testing.assert_allclose(v.numpy(), start[k] + 1.0, rtol=1e-6)
    with flow.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=2)  # then 0.9 * ema + 0.1 * model
    for k, v in ema.state_dict().items():
        np.testing.assert_allclose(v.numpy(), start[k] + 1.1, rtol=1e-5)
        np.testing.assert_allclose(model.state_dict()[k].numpy(), start[k] + 2.0, rtol=1e-6)
    assert all(not p.requires_grad for p in ema.module.parameters())


def test_hook_updates_after_each_optimizer_step_with_its_number():
    """Eager LiBai steps the optimizer every num_accumulation_steps iterations; so does the EMA."""
    from types import SimpleNamespace

    from libai_vit.engine.hooks import ModelEmaUpdate

    calls = []
    ema = SimpleNamespace(update=lambda model, step: calls.append(step))
    hook = ModelEmaUpdate(ema, iterations_per_update=2)
    hook.trainer = SimpleNamespace(model=None, iter=0)
    for it in range(6):
        hook.trainer.iter = it
        hook.after_step()
    assert calls == [1, 2, 3]
    hook.trainer.iter = 9  # resumed at iteration 9: the 5th update, as in the uninterrupted run
    hook.after_step()
    assert calls[-1] == 5
