"""Top-5 classes of images with a trained checkpoint (or a pretrained file).

    .venv/bin/python tools/predict.py CHECKPOINT IMAGE [IMAGE ...] [--config FILE] [--model NAME]
                                      [--classes FILE] [--topk K]

CHECKPOINT is a checkpoint directory of a run (OUTPUT/model_final, OUTPUT/model_best, ...) or a
pretrained file with --model NAME. The model and its eval transform come from the run's config
(default: the config.yaml above CHECKPOINT); the class names from --classes (one per line, in label
order), else from the config's training ImageFolder (its `classes` list or its train/ folder names,
relative paths as seen from the current directory). Any unreadable input is a one-line error naming
it and exit status 1.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import oneflow as flow  # noqa: E402

from libai_vit import inference  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a run's checkpoint directory, e.g. output/X/model_final")
    p.add_argument("images", nargs="+")
    p.add_argument("--config", help="the run's config (default: the config.yaml above CHECKPOINT)")
    p.add_argument(
        "--model", help="zoo name, e.g. vit_base_patch16_224, instead of the run's config"
    )
    p.add_argument("--classes", help="class names, one per line in label order")
    p.add_argument("--topk", type=int, default=5)
    args = p.parse_args(argv)
    try:
        checkpoint = inference.checkpoint_path(args.checkpoint)
        images = inference.read_images(args.images)
        config = args.config or inference.find_config(checkpoint)
        cfg = inference.load_config(config) if args.config or (config and not args.model) else None
        model = inference.load_model(checkpoint, cfg, args.model)
        transform = inference.preprocessing(cfg, model)
        names = inference.class_names(cfg, args.classes)
        if len(names) != model.num_classes:
            raise inference.InferenceError(
                f"{len(names)} class names for a model with {model.num_classes} classes"
            )
    except inference.InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    probs = inference.predict(model, flow.stack([transform(img) for img in images]))
    k = min(args.topk, len(names))
    for path, row in zip(args.images, probs):
        top = np.argsort(-row)[:k]
        print(f"{path}: " + ", ".join(f"{names[i]} {row[i]:.3f}" for i in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
