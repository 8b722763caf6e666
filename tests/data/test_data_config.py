"""pretrained_cfg, resolve_data_config and the eval transform equal timm's for every zoo name
(tests/fixtures/timm/data_configs.json, made by generators/make_timm_data_configs.py from
timm itself)."""

import json
import os

import numpy as np
import pytest

from libai_vit import create_model, inference
from libai_vit.data import create_eval_transform, resolve_data_config
from libai_vit.models.zoo import MODELS

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "timm", "data_configs.json")
with open(FIXTURE) as f:
    TIMM = json.load(f)["data"]


def _same(ours, timm):
    """Equal, numbers within float32 rounding (timm's mean/std pass through torch tensors)."""
    assert set(ours) == set(timm), (sorted(ours), sorted(timm))
    for key, value in timm.items():
        if isinstance(value, list) and value and isinstance(value[0], float):
            np.testing.assert_allclose(ours[key], value, rtol=1e-6, err_msg=key)
        else:
            assert (list(ours[key]) if isinstance(ours[key], tuple) else ours[key]) == value, key


def test_every_zoo_name_has_timms_pretrained_cfg():
    for name, expected in TIMM.items():
        _same(MODELS[name]["pretrained_cfg"], expected["pretrained_cfg"])


@pytest.mark.parametrize("name", sorted(TIMM))
def test_data_config_and_eval_transform_are_timms(name):
    config = resolve_data_config(pretrained_cfg=MODELS[name]["pretrained_cfg"])
    _same(config, TIMM[name]["data_config"])
    description = inference.describe_preprocessing(create_eval_transform(**config))
    _same(description, TIMM[name]["eval_transform"])


def test_model_pretrained_cfg():
    model = create_model(
        "vit_base_patch16_clip_224", img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2
    )
    cfg = model.pretrained_cfg
    assert model.default_cfg == cfg and cfg["architecture"] == "vit_base_patch16_clip_224"
    assert cfg["input_size"] == (3, 32, 32)  # the size the model is built for
    assert (cfg["classifier"], cfg["first_conv"]) == ("head", "patch_embed.proj")
    modules = dict(model.named_modules())
    assert modules[cfg["classifier"]] is model.get_classifier()
    assert modules[cfg["first_conv"]] is model.patch_embed.proj
    expected = TIMM["vit_base_patch16_clip_224"]["pretrained_cfg"]
    config = resolve_data_config(model)
    assert config["input_size"] == (3, 32, 32) and config["crop_pct"] == expected["crop_pct"]
    np.testing.assert_allclose(config["mean"], expected["mean"])
    # timm's precedence: args over the pretrained config
    assert resolve_data_config(model, args=dict(crop_pct=1.0, img_size=48))["input_size"] == (
        3,
        48,
        48,
    )


def test_bad_crop_mode_is_one_line():
    with pytest.raises(ValueError, match="crop_mode='border' must be one of"):
        create_eval_transform((3, 32, 32), crop_mode="border")
