"""list_models and is_model answer as timm's (tests/fixtures/timm/data_configs.json, by
generators/make_timm_data_configs.py), restricted to the architectures built here, plus the names
timm lacks (InternViT-6B)."""

import json
import os

import pytest

from libai_vit import create_model, is_model, list_models
from libai_vit.models.zoo import BEYOND_TIMM

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "timm", "data_configs.json")
with open(FIXTURE) as f:
    QUERIES = json.load(f)["list_models"]


@pytest.mark.parametrize("case", QUERIES, ids=[json.dumps(q["query"]) for q in QUERIES])
def test_list_models_is_timms(case):
    names = list_models(**case["query"])
    assert [n for n in names if n not in BEYOND_TIMM] == case["names"]


def test_list_models_has_the_names_beyond_timm():
    assert list_models("*intern*") == [
        "vit_intern6b_patch14_224",
        "vit_intern6b_patch14_448",
        "vit_intern300m_patch14_448",
    ]
    assert "vit_intern6b_patch14_448" not in list_models(pretrained=True)  # no timm weights


def test_is_model():
    assert is_model("vit_base_patch16_224") and is_model("vit_base_patch16_224.augreg_in21k")
    assert not is_model("resnet50") and not is_model("vit_base_*")


def test_a_tagged_name_builds_with_its_tags_pretrained_cfg():
    small = dict(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    model = create_model("vit_base_patch16_224.augreg_in21k", **small)
    assert model.pretrained_cfg["tag"] == "augreg_in21k"
    assert model.pretrained_cfg["num_classes"] == 21843  # the in21k head of those weights
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'.*augreg_in21k"):
        create_model("vit_base_patch16_224.nope", **small)


def test_whole_width_qk_norm_needs_qk_norm():
    with pytest.raises(ValueError, match="qk_norm_whole_width=True is a kind of qk norm"):
        create_model("vit_intern6b_patch14_448", qk_norm=False, depth=1, embed_dim=50, num_heads=2)
