"""Top-5 classes of images with a trained checkpoint (or a pretrained file) or an ONNX export.

    .venv/bin/python tools/predict.py CHECKPOINT IMAGE [IMAGE ...] [--config FILE] [--model NAME]
                                      [--classes FILE] [--topk K]
    .venv/bin/python tools/predict.py --onnx OUT.onnx IMAGE [IMAGE ...] [--classes FILE] [--topk K]

CHECKPOINT is a checkpoint directory of a run (OUTPUT/model_final, OUTPUT/model_best, ...) or a
pretrained file with --model NAME. The model and its eval transform come from the run's config
(default: the config.yaml above CHECKPOINT); the class names from --classes (one per line, in label
order), else from the config's training ImageFolder (its `classes` list or its train/ folder names,
relative paths as seen from the current directory). With --onnx (tools/export_onnx.py's file) the
model runs in onnxruntime, its preprocessing and class names (unless --classes) read from the file.
Any unreadable input is a one-line error naming it and exit status 1.
"""

import argparse
import sys

import numpy as np
import oneflow as flow

from libai_vit import inference
from libai_vit.onnx_export import OnnxClassifier, OnnxExportError


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="CHECKPOINT IMAGE [IMAGE ...]; with --onnx: IMAGEs"
    )
    p.add_argument(
        "--onnx", help="an exported ONNX file (tools/export_onnx.py) instead of CHECKPOINT"
    )
    p.add_argument("--config", help="the run's config (default: the config.yaml above CHECKPOINT)")
    p.add_argument(
        "--model", help="zoo name, e.g. vit_base_patch16_224, instead of the run's config"
    )
    p.add_argument("--classes", help="class names, one per line in label order")
    p.add_argument("--topk", type=int, default=5)
    args = p.parse_args(argv)
    if not args.onnx and len(args.paths) < 2:
        p.error("give CHECKPOINT and at least one IMAGE (or --onnx FILE IMAGE ...)")
    image_paths = args.paths if args.onnx else args.paths[1:]
    try:
        checkpoint = None if args.onnx else inference.checkpoint_path(args.paths[0])
        images = inference.read_images(image_paths)
        if args.onnx:
            probs, names = _onnx_predict(args.onnx, images, args.classes)
        else:
            probs, names = _oneflow_predict(checkpoint, args, images)
        if len(names) != probs.shape[1]:
            raise inference.InferenceError(
                f"{len(names)} class names for a model with {probs.shape[1]} classes"
            )
    except (inference.InferenceError, OnnxExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    k = min(args.topk, len(names))
    for path, row in zip(image_paths, probs):
        top = np.argsort(-row)[:k]
        print(f"{path}: " + ", ".join(f"{names[i]} {row[i]:.3f}" for i in top))
    return 0


def _oneflow_predict(checkpoint, args, images):
    cfg = inference.run_config(checkpoint, args.config, args.model)
    model = inference.load_model(checkpoint, cfg, args.model)
    transform = inference.preprocessing(cfg, model)
    names = inference.class_names(cfg, args.classes)
    return inference.predict(model, flow.stack([transform(img) for img in images])), names


def _onnx_predict(path, images, classes_file):
    classifier = OnnxClassifier(path)
    if classes_file or classifier.class_names is None:
        names = inference.class_names(None, classes_file)
    else:
        names = classifier.class_names
    return classifier.predict(images), names


if __name__ == "__main__":
    sys.exit(main())
