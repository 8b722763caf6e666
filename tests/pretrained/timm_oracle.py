"""The timm fixtures (tests/fixtures/timm, by generators/make_timm_fixtures.py) and InternViT's
(tests/fixtures/internvit): our side."""

import json
import os

import numpy as np
import oneflow as flow

from libai_vit import create_model

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "timm")
# InternViT's fixtures (generators/make_internvit_fixtures.py: OpenGVLab's code is their oracle),
# whose cases join timm's
INTERNVIT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "internvit")
TOL = 1e-4


def _read(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    for case in manifest["cases"].values():
        case["file"] = os.path.join(folder, case["file"])
    return manifest, dict(np.load(os.path.join(folder, "oracle.npz")))


MANIFEST, ORACLE = _read(FIXTURES)
_internvit_manifest, _internvit_oracle = _read(INTERNVIT)
MANIFEST["cases"].update(_internvit_manifest["cases"])
ORACLE.update(_internvit_oracle)
CASES = sorted(MANIFEST["cases"])


def fixture(name):
    return os.path.join(FIXTURES, name)


def build(case):
    """Our model of a case: timm's name and kwargs, as a timm user writes them."""
    c = MANIFEST["cases"][case]
    return create_model(c["timm_name"], **c["kwargs"]).eval()


def output(model, images, kind):
    """logits, or pre-logits (pooled, fc_norm'd features: what a new head sees)."""
    with flow.no_grad():
        x = flow.tensor(images)
        if kind == "logits":
            y = model(x)["prediction_scores"]
        else:
            y = model.forward_head(model.forward_features(x), pre_logits=True)
        return y.to_global(sbp=[flow.sbp.broadcast] * len(y.sbp)).to_local().numpy()


def run_case(case, load):
    """max |ours - timm| for `case` loaded by `load(model, path)`, and what the load returned."""
    c = MANIFEST["cases"][case]
    model = build(case)
    result = load(model, fixture(c["file"]))
    ours = output(model, ORACLE[c["input"]], c["output"])
    return float(np.abs(ours - ORACLE[f"{case}/output"]).max()), result
