"""libai_vit.inference: what tools/predict.py and tools/visualize_attention.py share."""

import os

import numpy as np
import oneflow as flow
import pytest
from libai.config import LazyCall, LazyConfig
from libai.utils.checkpoint import Checkpointer
from omegaconf import DictConfig
from PIL import Image

import libai_vit
from libai_vit import inference

from conftest import ROOT

KWARGS = dict(img_size=32, patch_size=8, num_classes=3, embed_dim=32, depth=2, num_heads=4)


def write_run(tmp_path, **kwargs):
    """A run's output folder as LiBai leaves it: OUTPUT/config.yaml and OUTPUT/model_final/model;
    returns it, the model and an image."""
    model = libai_vit.VisionTransformer(**kwargs)
    Checkpointer(model, save_dir=str(tmp_path / "out")).save("model_final")
    config = DictConfig(
        {"model": LazyCall(libai_vit.VisionTransformer)(**kwargs)}, flags={"allow_objects": True}
    )
    LazyConfig.save(config, str(tmp_path / "out" / "config.yaml"))
    image = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(
        image
    )
    return tmp_path / "out", model, str(image)


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path, **KWARGS)


def test_a_run_is_found_from_its_checkpoint_or_model_entry_and_predicts_as_the_model(run):
    out, trained, image = run
    for given in (out / "model_final", out / "model_final" / "model"):
        checkpoint = inference.checkpoint_path(str(given))
        assert checkpoint == str(out / "model_final")
        assert inference.find_config(checkpoint) == str(out / "config.yaml")
    cfg = inference.load_config(inference.find_config(checkpoint))
    model = inference.load_model(checkpoint, cfg)
    transform = inference.preprocessing(cfg, model)
    batch = flow.stack([transform(img) for img in inference.read_images([image])])
    probs = inference.predict(model, batch)
    with flow.no_grad():
        expected = flow.softmax(trained.eval()(batch)["prediction_scores"], dim=-1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    probs_again, weights = inference.predict(
        inference.load_model(checkpoint, cfg, attention_weights=True), batch, attention_weights=True
    )
    np.testing.assert_allclose(probs_again, probs, rtol=1e-5, atol=1e-6)
    assert len(weights) == 2 and weights[0].shape == (1, 4, 17, 17)


def test_preprocessing_is_the_configs_and_undoes_to_the_cropped_pixels(run):
    out, _, image = run
    cfg = inference.load_config(str(out / "config.yaml"))
    model = inference.load_model(str(out / "model_final"), cfg)
    transform = inference.preprocessing(cfg, model)
    img = inference.read_images([image])[0]
    pixels = inference.undo_normalize(transform, transform(img))
    # the eval transform without its Normalize: resize + center crop + to [0, 1]
    resize, center_crop, to_tensor, _ = transform.transforms
    crop = to_tensor(center_crop(resize(img))).numpy().transpose(1, 2, 0)
    assert pixels.shape == (32, 32, 3)
    np.testing.assert_allclose(pixels, crop, atol=1e-5)


def test_bad_inputs_are_one_line_errors(run, tmp_path):
    out, _, image = run
    with pytest.raises(inference.InferenceError, match="no such checkpoint directory"):
        inference.checkpoint_path(str(tmp_path / "missing"))
    with pytest.raises(inference.InferenceError, match="not a checkpoint directory"):
        inference.checkpoint_path(str(tmp_path))
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(inference.InferenceError, match="bad.png: cannot read the image"):
        inference.read_images([image, str(tmp_path / "bad.png")])
    with pytest.raises(inference.InferenceError, match="no training ImageFolder"):
        inference.class_names(inference.load_config(str(out / "config.yaml")))


def test_visualize_attention_tool(tmp_path, capsys, monkeypatch):
    """The tool draws a run's attention (a flash run: the maps need the math backend) and gives
    one-line errors."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tools"))
    import visualize_attention

    out, _, image = write_run(tmp_path, **dict(KWARGS, num_classes=10, attn_backend="flash"))
    ckpt = str(out / "model_final" / "model")
    png = tmp_path / "attn.png"
    assert visualize_attention.main([ckpt, image, "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    (tmp_path / "bad.png").write_text("not an image")
    assert visualize_attention.main([ckpt, str(tmp_path / "bad.png")]) == 2
    assert "bad.png: cannot read the image" in capsys.readouterr().err
    assert visualize_attention.main([str(tmp_path / "missing"), image]) == 2
    assert "missing: no such checkpoint directory" in capsys.readouterr().err


def test_extract_features_tool(tmp_path, capsys, monkeypatch):
    """Each requested block's NCHW map as the model's forward_intermediates gives it, the PCA
    picture beside it, and one-line errors."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tools"))
    import extract_features

    out, model, image = write_run(tmp_path, **KWARGS)
    ckpt = str(out / "model_final")
    dest = tmp_path / "feats"
    assert extract_features.main([ckpt, image, "--blocks", "0", "-1", "--out-dir", str(dest)]) == 0
    saved = np.load(dest / "img.npz")
    assert sorted(saved) == ["block0", "block1"]
    cfg = inference.load_config(str(out / "config.yaml"))
    pixels = inference.preprocessing(cfg, model)(Image.open(image).convert("RGB"))
    with flow.no_grad():
        expected = model.eval().forward_intermediates(pixels[None], intermediates_only=True)
    for b in (0, 1):
        assert saved[f"block{b}"].shape == (32, 4, 4)
        np.testing.assert_allclose(saved[f"block{b}"], expected[b].numpy()[0], atol=1e-5)
    assert (dest / "img.png").stat().st_size > 0
    rgb = extract_features.principal_components_rgb(saved["block1"])
    assert rgb.shape == (4, 4, 3) and rgb.min() == 0.0 and rgb.max() == 1.0
    assert extract_features.main([ckpt, image, "--blocks", "2"]) == 2
    assert "--blocks [2]: the model has 2 blocks" in capsys.readouterr().err
