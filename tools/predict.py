"""Top-5 classes of images with a trained checkpoint.

    .venv/bin/python tools/predict.py CHECKPOINT IMAGE [IMAGE ...] [--config FILE] [--classes FILE] [--topk K]

CHECKPOINT is a checkpoint directory of a run (OUTPUT/model_final, OUTPUT/model_best, ...). The model
and its eval transform come from the run's config (default: OUTPUT/config.yaml); the class names
from --classes (one per line, in label order), else from the config's training ImageFolder (its
`classes` list or its train/ folder names, relative paths as seen from the current directory).
Any unreadable input is a one-line error naming it and exit status 1.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import oneflow as flow  # noqa: E402

import libai_vit  # noqa: E402,F401  (applies the LiBai compatibility fixes)
from libai.config import LazyConfig, instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from libai_vit.pretrained import PretrainedError, load_pretrained  # noqa: E402
from libai_vit.data.folder import DatasetError, list_classes, load_rgb  # noqa: E402
from libai_vit.data.transforms import eval_transform  # noqa: E402


class PredictError(Exception):
    pass


def class_names(cfg, classes_file):
    if classes_file:
        try:
            with open(classes_file) as f:
                return [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise PredictError(f"{classes_file}: cannot read the class names ({e.strerror})") from None
    dataset = OmegaConf.select(cfg, "dataloader.train.dataset.0", default=None)
    if dataset is None:
        raise PredictError("the config has no training ImageFolder: pass --classes FILE")
    if dataset.get("classes"):
        return list(dataset.classes)
    try:
        return list_classes(os.path.join(dataset.root, "train"))
    except DatasetError as e:
        raise PredictError(f"{e}: pass --classes FILE") from None


def build(checkpoint, config):
    try:
        cfg = LazyConfig.load(config)
    except Exception as e:  # noqa: BLE001  (any unloadable file: say which)
        raise PredictError(f"{config}: cannot load the config ({type(e).__name__}: {e})") from None
    if "pretrained" in cfg.model:
        cfg.model.pretrained = None  # the checkpoint below has every weight
    model = instantiate(cfg.model)
    try:
        load_pretrained(model, checkpoint)
    except PretrainedError as e:
        raise PredictError(str(e)) from None
    model.eval()
    test_transform = OmegaConf.select(cfg, "dataloader.test.0.dataset.transform", default=None)
    transform = instantiate(test_transform) if test_transform is not None else eval_transform(cfg.model.img_size)
    return cfg, model, transform


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a run's checkpoint directory, e.g. output/X/model_final")
    p.add_argument("images", nargs="+")
    p.add_argument("--config", help="the run's config (default: CHECKPOINT/../config.yaml)")
    p.add_argument("--classes", help="class names, one per line in label order")
    p.add_argument("--topk", type=int, default=5)
    args = p.parse_args(argv)
    try:
        if not os.path.isdir(args.checkpoint):
            raise PredictError(f"{args.checkpoint}: no such checkpoint directory")
        config = args.config or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "config.yaml")
        images = []
        for path in args.images:  # every input is checked before the model is built
            try:
                images.append(load_rgb(path))
            except (OSError, SyntaxError, ValueError) as e:
                raise PredictError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
        cfg, model, transform = build(args.checkpoint, config)
        names = class_names(cfg, args.classes)
        if len(names) != cfg.model.num_classes:
            raise PredictError(f"{len(names)} class names for a model with {cfg.model.num_classes} classes")
    except PredictError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    batch = flow.stack([transform(img) for img in images])
    with flow.no_grad():
        logits = model(batch)["prediction_scores"]
    probs = flow.softmax(logits, dim=-1).to_local().numpy()
    k = min(args.topk, len(names))
    for path, row in zip(args.images, probs):
        top = np.argsort(-row)[:k]
        print(f"{path}: " + ", ".join(f"{names[i]} {row[i]:.3f}" for i in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
