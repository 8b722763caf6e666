"""Export a trained checkpoint (or a pretrained file) to ONNX, for serving without OneFlow.

    .venv/bin/python tools/export_onnx.py CHECKPOINT OUT.onnx [--model NAME] [--config FILE]
                                          [--img-size N] [--opset K] [--classes FILE]

CHECKPOINT is what tools/predict.py takes: a run's checkpoint directory (its config.yaml found above
it) or a pretrained file with --model NAME. The eval model (1x1x1, math attention) is converted with
a free batch size; the file's metadata holds its input/output names, the config's eval preprocessing
and the class names when known (--classes, else the run's). Needs the optional extra, installed by
`bash tools/setup.sh --onnx`. Any unusable input is a one-line error and exit status 1.
"""

import argparse
import os
import sys

from libai_vit import inference, onnx_export
from libai_vit.onnx_export.extra import require


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a run's checkpoint directory, e.g. output/X/model_final")
    p.add_argument("out", help="the ONNX file to write")
    p.add_argument(
        "--model", help="zoo name, e.g. vit_base_patch16_224, instead of the run's config"
    )
    p.add_argument("--config", help="the run's config (default: the config.yaml above CHECKPOINT)")
    p.add_argument("--img-size", type=int, help="the input size (default: the model's)")
    p.add_argument("--opset", type=int, default=onnx_export.DEFAULT_OPSET)
    p.add_argument("--classes", help="class names, one per line in label order, for the metadata")
    args = p.parse_args(argv)
    try:
        inference.check_output_file(args.out, os.path.join(args.out, "model.onnx"))
        require("onnx", "onnxruntime", "oneflow_onnx")  # a missing extra fails before any model
        checkpoint = inference.checkpoint_path(args.checkpoint)
        cfg = inference.run_config(checkpoint, args.config, args.model)
        model = inference.load_model(
            checkpoint, cfg, args.model, attn_backend="math", img_size=args.img_size
        )
        preprocessing = inference.describe_preprocessing(inference.preprocessing(cfg, model))
        onnx_export.export_onnx(
            model,
            args.out,
            preprocessing,
            opset=args.opset,
            class_names=_class_names(cfg, args.classes, model.num_classes),
            name=args.model or f"{cfg.model._target_} of {checkpoint}",
        )
    except (inference.InferenceError, onnx_export.OnnxExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def _class_names(cfg, classes_file, num_classes):
    """--classes, else the run's when it has them, else None (the file then holds none)."""
    if classes_file:
        names = inference.class_names(cfg, classes_file)
    else:
        try:
            names = inference.class_names(cfg)
        except inference.InferenceError:
            return None
    if len(names) != num_classes:
        raise inference.InferenceError(
            f"{len(names)} class names for a model with {num_classes} classes"
        )
    return names


if __name__ == "__main__":
    sys.exit(main())
