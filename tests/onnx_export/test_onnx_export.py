"""ONNX export (libai_vit.onnx_export, tools/export_onnx.py, tools/predict.py --onnx): onnxruntime's
logits equal OneFlow's within 1e-4 at batch sizes 1 and 3, for a checkpoint the demo trained and for
every family's timm fixture; predict --onnx prints the OneFlow path's top-5. The optional extra is
installed by the set-up script itself (once, stamped): if it cannot be, these tests fail."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import oneflow as flow
import pytest
from PIL import Image

from libai_vit import create_model, inference
from libai_vit.data.transforms import eval_transform
from libai_vit.onnx_export import OPSETS, OnnxClassifier, OnnxExportError, export_onnx
from libai_vit.onnx_export.export import _refuse_unconverted_ops
from libai_vit.onnx_export.extra import require

from conftest import ROOT, tiny_vit, train

TOL = 1e-4
TIMM_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "timm")
with open(os.path.join(TIMM_FIXTURES, "manifest.json")) as f:
    MANIFEST = json.load(f)
BATCHES = (1, 3)
# every model family the project loads, by its timm fixture: plain ViT (tiny16, p14), DeiT,
# DeiT III (LayerScale, no_embed_class), DINOv2 (+ registers), CLIP (pre_norm, quick_gelu), SigLIP
# (MAP head), qk_norm, average pooling + fc_norm, MAE (no head), EVA-02 (RoPE, SwiGLU)
FAMILIES = sorted(MANIFEST["fixtures"])
TOOL_ENV = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="3")


@pytest.fixture(scope="session")
def onnx_extra():
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "tools", "setup.sh"), "--onnx"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"bash tools/setup.sh --onnx failed:\n{proc.stderr[-3000:]}"
    return require("onnx", "onnxruntime")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, digits_root):
    """The README demo's config trained briefly at 1x1x1: OUTPUT/model_final and its config.yaml."""
    out = tmp_path_factory.mktemp("demo_run")
    train(
        [
            os.path.join(ROOT, "tools", "train_net.py"),
            os.path.join(ROOT, "configs", "demo_digits_3d.py"),
            f"train.output_dir={out}",
            "train.dist.data_parallel_size=1",
            "train.dist.tensor_parallel_size=1",
            "train.dist.pipeline_parallel_size=1",
            "train.num_accumulation_steps=1",
            "train.train_iter=30",
            "train.checkpointer.period=30",
            "train.evaluation.enabled=False",
            f"dataloader.train.dataset.0.root={digits_root}",
            f"dataloader.test.0.dataset.root={digits_root}",
        ],
        1,
        timeout=300,
    )
    images = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(digits_root, "val"))
        for name in names
    )[::40][:3]
    return str(out / "model_final"), images


def _oneflow_logits(model, batch):
    with flow.no_grad():
        y = model(flow.tensor(batch))["prediction_scores"]
    return y.to_global(sbp=[flow.sbp.broadcast] * len(y.sbp)).to_local().numpy()


def _max_diffs(model, onnx_file, batches):
    """max |onnxruntime - OneFlow| of the logits, per batch."""
    classifier = OnnxClassifier(onnx_file)
    return [float(np.abs(classifier.logits(b) - _oneflow_logits(model, b)).max()) for b in batches]


def _random_batches(model):
    size = tuple(model.patch_embed.img_size)
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, 3, *size)).astype(np.float32) for n in BATCHES]


def _tool(name, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)],
        capture_output=True,
        text=True,
        env=TOOL_ENV,
        timeout=300,
    )


@pytest.mark.slow
def test_the_demos_checkpoint_exports_with_its_preprocessing_and_predicts_the_same(
    onnx_extra, demo_run, tmp_path
):
    checkpoint, images = demo_run
    out = tmp_path / "demo.onnx"
    proc = _tool("export_onnx.py", checkpoint, out)
    assert proc.returncode == 0, proc.stderr[-3000:]

    cfg = inference.load_config(inference.find_config(checkpoint))
    model = inference.load_model(checkpoint, cfg)
    transform = inference.preprocessing(cfg, model)
    classifier = OnnxClassifier(str(out))
    assert classifier.class_names == [str(i) for i in range(10)]
    pixels = inference.read_images(images)
    ours = np.stack([transform(img).numpy() for img in pixels])
    from_metadata = np.stack([classifier.preprocess(img) for img in pixels])
    np.testing.assert_allclose(from_metadata, ours, atol=1e-6, rtol=0)

    diffs = _max_diffs(model, str(out), [ours[:1], ours] + _random_batches(model))
    print(f"demo checkpoint: max |onnx - oneflow| images b1, b3, random b1, b3 = {diffs}")
    assert max(diffs) < TOL

    oneflow_top5 = _tool("predict.py", checkpoint, *images)
    onnx_top5 = _tool("predict.py", "--onnx", out, *images)
    assert oneflow_top5.returncode == 0 and onnx_top5.returncode == 0, onnx_top5.stderr[-2000:]
    assert len(onnx_top5.stdout.splitlines()) == len(images)
    assert onnx_top5.stdout == oneflow_top5.stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_exports_and_matches_oneflow(onnx_extra, family, tmp_path):
    fx = MANIFEST["fixtures"][family]
    weights = os.path.join(TIMM_FIXTURES, sorted(fx["files"].values())[0])
    model = create_model(
        fx["timm_name"], pretrained=weights, attn_backend="math", **fx["timm_kwargs"]
    ).eval()
    out = str(tmp_path / f"{family}.onnx")
    size = list(model.patch_embed.img_size)
    preprocessing = inference.describe_preprocessing(eval_transform(tuple(size)))
    export_onnx(model, out, preprocessing, name=fx["timm_name"])
    diffs = _max_diffs(model, out, _random_batches(model))
    print(f"{family} ({fx['timm_name']}): max |onnx - oneflow| at batch {BATCHES} = {diffs}")
    assert max(diffs) < TOL


@pytest.mark.parametrize("opset", [OPSETS.start, OPSETS.stop - 1])
def test_the_opset_range_ends_export_too(onnx_extra, opset, tmp_path):
    model = _small(act_layer="gelu_tanh", mlp_layer="swiglu", use_rot_pos_emb=True, reg_tokens=2)
    out = str(tmp_path / "m.onnx")
    export_onnx(model, out, _square(model), opset=opset)
    assert onnx_extra[0].load(out).opset_import[0].version == opset
    assert max(_max_diffs(model, out, _random_batches(model))) < TOL


def test_an_op_the_converter_lacks_refuses_the_model_by_name(onnx_extra):
    onnx = onnx_extra[0]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("upsample_bicubic_2d", ["x"], ["y"])], "g", [], []
    )
    with pytest.raises(OnnxExportError) as e:
        _refuse_unconverted_ops(onnx.helper.make_model(graph), "vit_x")
    assert str(e.value) == (
        "vit_x cannot be exported: oneflow-onnx 0.6.2 has no conversion for the OneFlow op(s) "
        "upsample_bicubic_2d"
    )


def test_bad_inputs_are_one_line_errors(onnx_extra, tmp_path):
    model = _small()
    with pytest.raises(OnnxExportError, match=r"--opset 9: supported are 11\.\.17"):
        export_onnx(model, str(tmp_path / "m.onnx"), _square(model), opset=9)
    with pytest.raises(OnnxExportError, match=r"gives \[8, 8\] images, the model takes \(16, 16\)"):
        export_onnx(model, str(tmp_path / "m.onnx"), {**_square(model), "crop": [8, 8]})
    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16)).save(image)
    (tmp_path / "notes.txt").write_text("not a model")
    for path, expected in (
        (tmp_path / "none.onnx", "none.onnx: no such ONNX file"),
        (tmp_path / "notes.txt", "notes.txt: not a readable ONNX model"),
    ):
        assert expected in _one_error_line(_tool("predict.py", "--onnx", path, image))


def test_without_the_extra_export_says_how_to_install_it(tmp_path):
    """A clone where `tools/setup.sh --onnx` never ran: one line, before any model is built."""
    clone = tmp_path / "clone"
    for folder in ("libai_vit", "tools"):
        shutil.copytree(os.path.join(ROOT, folder), clone / folder)
    proc = subprocess.run(
        [sys.executable, str(clone / "tools" / "export_onnx.py"), "none", "out.onnx"],
        capture_output=True,
        text=True,
        env=dict(TOOL_ENV, PYTHONPATH=str(clone)),
        timeout=120,
    )
    line = _one_error_line(proc)
    assert "the ONNX extra is missing" in line and "run `bash tools/setup.sh --onnx`" in line


def _one_error_line(proc):
    """The one `error: ...` line of a tool that exited with status 1, without a traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _small(**kwargs):
    return tiny_vit(
        img_size=16,
        patch_size=8,
        depth=1,
        num_heads=2,
        num_classes=5,
        attn_backend="math",
        **kwargs,
    ).eval()


def _square(model):
    return inference.describe_preprocessing(eval_transform(tuple(model.patch_embed.img_size)))
