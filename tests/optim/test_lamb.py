"""libai_vit.optim.Lamb against timm's Lamb (= apex FusedLAMB, DeiT III's optimizer), step for step;
OneFlow's own LAMB is another variant (why the recipe uses this one)."""

import json
import os

import numpy as np
import oneflow as flow

import libai_vit  # noqa: F401
from libai_vit.optim import Lamb

REFERENCE = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "fixtures", "recipes", "reference.json"
)


def _run(make_optimizer):
    with open(REFERENCE) as f:
        ref = json.load(f)["lamb"]
    params = [flow.nn.Parameter(flow.tensor(np.array(w, dtype=np.float32))) for w in ref["init"]]
    opt = make_optimizer(params, ref["kwargs"])
    for step in ref["grads"]:
        for p, g in zip(params, step):
            p.grad = flow.tensor(np.array(g, dtype=np.float32))
        opt.step()
    return [p.numpy() for p in params], [np.array(r, dtype=np.float32) for r in ref["result"]]


def _groups(params):
    return [dict(params=[params[0]]), dict(params=[params[1]], weight_decay=0.0)]


def test_lamb_matches_timm():
    ours, theirs = _run(lambda params, kw: Lamb(_groups(params), **kw))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_oneflows_lamb_is_another_variant():
    ours, theirs = _run(lambda params, kw: flow.optim.LAMB(_groups(params), **kw))
    # both tensors differ: the one with weight decay (trust ratio without the decay term) and the
    # one without (OneFlow scales it by a trust ratio too)
    assert all(np.abs(a - b).max() > 1e-3 for a, b in zip(ours, theirs))


def test_lamb_state_round_trips():
    p = flow.nn.Parameter(flow.ones(3))
    opt = Lamb([p], lr=0.1)
    p.grad = flow.ones(3)
    opt.step()
    again = Lamb([flow.nn.Parameter(flow.ones(3))], lr=0.1)
    again.load_state_dict(opt.state_dict())
    assert again._state["step"] == 1
