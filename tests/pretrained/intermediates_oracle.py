"""timm's forward_intermediates outputs (tests/fixtures/timm/intermediates.npz, written by
generators/make_timm_intermediates.py) and our side of them."""

import os

import numpy as np
import oneflow as flow
from timm_oracle import FIXTURES, MANIFEST, ORACLE, build, fixture

from libai_vit.pretrained import load_pretrained

EXPECTED = dict(np.load(os.path.join(FIXTURES, "intermediates.npz")))
CASES = sorted({key.split("/")[0] for key in EXPECTED})
# the calls of generators/make_timm_intermediates.py, with timm's arguments
CALLS = {
    "all": dict(),
    "last1_norm_prefix_nlc": dict(
        indices=1, norm=True, return_prefix_tokens=True, output_fmt="NLC"
    ),
    "first_stop_early": dict(indices=[0], stop_early=True),
    "neg_only": dict(indices=[-2, -1], intermediates_only=True, norm=True),
}


def _numpy(t):
    return t.to_global(sbp=[flow.sbp.broadcast] * len(t.sbp)).to_local().numpy()


def outputs(case):
    """{key: our array} for every call of `case`, keyed as in intermediates.npz."""
    c = MANIFEST["cases"][case]
    model = build(case)
    load_pretrained(model, fixture(c["file"]))
    x = flow.tensor(ORACLE[c["input"]])
    got = {}
    with flow.no_grad():
        for call, kwargs in CALLS.items():
            result = model.forward_intermediates(x, **kwargs)
            final, intermediates = (None, result) if kwargs.get("intermediates_only") else result
            if final is not None:
                got[f"{case}/{call}/final"] = _numpy(final)
            for k, y in enumerate(intermediates):
                if isinstance(y, tuple):
                    y, prefix = y
                    got[f"{case}/{call}/{k}/prefix"] = _numpy(prefix)
                got[f"{case}/{call}/{k}"] = _numpy(y)
    return got


def max_diff(case):
    """max |ours - timm| over every output of `case`, and the keys that differ in shape or
    presence."""
    got = outputs(case)
    want = {k: v for k, v in EXPECTED.items() if k.startswith(case + "/")}
    wrong = sorted(set(got) ^ set(want)) + [
        k for k in set(got) & set(want) if got[k].shape != want[k].shape
    ]
    diffs = [float(np.abs(got[k] - want[k]).max()) for k in want if k in got and not wrong]
    return (max(diffs) if diffs else float("inf")), wrong
