"""Every timm fixture, in every format, loaded into our ViT (1x1x1) gives timm's own outputs."""

import numpy as np
import pytest
from timm_oracle import CASES, MANIFEST, ORACLE, TOL, build, fixture, output, run_case

from libai_vit import create_model
from libai_vit.pretrained import PretrainedError, load_pretrained


@pytest.mark.parametrize("case", CASES)
def test_outputs_match_timm(case):
    diff, _ = run_case(case, load_pretrained)
    print(f"{case}: max |ours - timm| = {diff:.3g}")
    assert diff < TOL, f"{case}: max |ours - timm| = {diff:.3g}"


@pytest.mark.parametrize("case", [c for c in CASES if "@" in c or "/p16" in c])
def test_resampled_embeddings_match_timm(case):
    c = MANIFEST["cases"][case]
    model = build(case)
    load_pretrained(model, fixture(c["file"]))
    np.testing.assert_allclose(
        model.pos_embed.numpy(), ORACLE[f"{case}/pos_embed"], atol=1e-5, rtol=0
    )
    if f"{case}/patch_embed" in ORACLE:
        np.testing.assert_allclose(
            model.patch_embed.proj.weight.numpy(), ORACLE[f"{case}/patch_embed"], atol=1e-5, rtol=0
        )


def test_resampling_mode_is_visible_at_this_tolerance():
    # timm resamples torch checkpoints bicubic (antialiased) and JAX ones bilinear: the fixtures
    # make the two differ well beyond TOL, so the oracle cases above tell the modes apart
    for size in (32, 64):
        a, b = ORACLE[f"tiny16.safetensors@{size}/output"], ORACLE[f"tiny16.npz@{size}/output"]
        assert np.abs(a - b).max() > 10 * TOL


def test_zoo_create_model_pretrained():
    kwargs = dict(MANIFEST["fixtures"]["tiny16"]["timm_kwargs"])
    model = create_model(
        "vit_tiny_patch16_224", pretrained=fixture("tiny16.safetensors"), **kwargs
    ).eval()
    ours = output(model, ORACLE["input@48"], "logits")
    assert np.abs(ours - ORACLE["tiny16.safetensors/output"]).max() < TOL


def _report(case):
    return run_case(case, load_pretrained)[1]


def test_report_same_model():
    r = _report("tiny16.pth")
    assert (r.format, r.missing, r.unexpected, r.dropped, r.resized) == ("torch", [], [], [], [])
    assert len(r.loaded) == 2 + 2 + 2 * 12 + 2 + 2  # cls, pos, patch w/b, 12 per block, norm, head


def test_report_new_head():
    r = _report("tiny16.safetensors/nc7")
    assert sorted(r.dropped) == ["head.bias", "head.weight"]
    assert sorted(r.missing) == ["head.bias", "head.weight"]
    assert r.unexpected == []
    r = _report("tiny16.pth/nc0")  # no head at all: the checkpoint's is dropped, nothing is missing
    assert sorted(r.dropped) == ["head.bias", "head.weight"] and r.missing == []


def test_report_mae_finetune():
    # MAE: the pre-training encoder has norm and no head; fine-tuning pools with a fresh fc_norm
    r = _report("mae.pth/avg_nc5")
    assert r.format == "torch"
    assert sorted(r.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert sorted(r.unexpected) == [
        "decoder_embed.bias",
        "decoder_embed.weight",
        "mask_token",
        "norm.bias",
        "norm.weight",
    ]
    r = _report("mae.pth/token")
    assert r.missing == [] and sorted(r.unexpected) == [
        "decoder_embed.bias",
        "decoder_embed.weight",
        "mask_token",
    ]


def test_report_deit_and_resampling():
    assert _report("deit.pth").missing == []
    assert _report("tiny16.npz@64").resized == ["pos_embed (3, 3) grid -> (4, 4) (bilinear)"]
    assert _report("tiny16.safetensors@32").resized == ["pos_embed (3, 3) grid -> (2, 2) (bicubic)"]
    assert (
        _report("p14.safetensors/p16")
        .resized[0]
        .startswith("patch_embed.proj.weight (48, 3, 14, 14) ->")
    )


@pytest.mark.parametrize(
    "name",
    ["tiny16", "deit3", "dinov2_reg4", "dinov2_g", "clip", "siglip", "qk_norm", "aimv2", "things"],
)
def test_export_to_timm_gives_back_timms_file(name):
    from safetensors.numpy import load_file

    from libai_vit.pretrained.timm_format import from_libai

    fx = MANIFEST["fixtures"][name]
    model = create_model(fx["timm_name"], **fx["timm_kwargs"])
    load_pretrained(model, fixture(fx["files"]["safetensors"]))
    ours = from_libai({k: v.numpy() for k, v in model.state_dict().items()}, model)
    theirs = load_file(fixture(fx["files"]["safetensors"]))
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


def test_export_to_timm_refuses_timms_eva_models():
    from libai_vit.pretrained.timm_format import from_libai

    fx = MANIFEST["fixtures"]["dinov3_s"]  # RoPE: timm's Eva, whose keys differ
    model = create_model(fx["timm_name"], **fx["timm_kwargs"])
    with pytest.raises(PretrainedError, match="RoPE models .* are not exported"):
        from_libai({k: v.numpy() for k, v in model.state_dict().items()}, model)


def test_report_release_formats():
    r = _report("dinov2_reg4.release")  # no head in the release; mask_token dropped as timm does
    assert r.format == "torch, DINOv2 format" and sorted(r.missing) == ["head.bias", "head.weight"]
    assert r.unexpected == [] and r.resized == []
    r = _report("clip.release/nc7")  # the image projection is CLIP's head: replaced for 7 classes
    assert r.format == "torch, OpenAI/OpenCLIP CLIP format"
    assert sorted(r.dropped) == ["head.bias", "head.weight"] and r.unexpected == []
    assert _report("siglip.release").format == "torch, OpenCLIP (timm trunk) format"
    # PE Core beside its text tower (whose block 9 and position embedding are not the image's)
    for case in ("pe_core_rel.release", "pe_lang_rel.release"):
        r = _report(case)
        assert r.format == "torch, Perception Encoder format", r.format
        assert r.unexpected == [] and r.missing == [] and r.resized == []
    assert _report("dinov2.release@42/nc7").resized == ["pos_embed (4, 4) grid -> (6, 6) (bicubic)"]


def test_eva_checkpoint_into_a_plain_vit_is_refused_by_name():
    c = MANIFEST["cases"]["eva02_b.safetensors"]
    model = create_model(
        "vit_small_patch16_224",
        **{
            k: c["kwargs"][k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
        },
    )
    with pytest.raises(PretrainedError, match="has shape .* the model expects"):
        load_pretrained(model, fixture(c["file"]))
