"""Inference with a trained run or a pretrained file: find its config, build and load the model, the
preprocessing the config's evaluation uses, predict. The tools (predict, visualize_attention) are
thin argument parsers over this module.

A checkpoint is a run's checkpoint directory (OUTPUT/model_final, OUTPUT/model_best, ..., or its
`model/` entry) or a pretrained file `libai_vit.pretrained` reads (timm, DeiT, MAE, JAX). The model
comes from a zoo name when one is given, else from the run's config (OUTPUT/config.yaml, found above
the checkpoint). Every failure is an InferenceError whose message names the file and the cause.
"""

import os

import numpy as np
import oneflow as flow
from libai.config import LazyConfig, instantiate
from omegaconf import OmegaConf

import libai_vit  # noqa: F401  (applies the LiBai compatibility fixes)
from libai_vit.data.data_config import model_eval_transform
from libai_vit.data.folder import DatasetError, list_classes, load_rgb
from libai_vit.pretrained import PretrainedError, load_pretrained


class InferenceError(Exception):
    """A checkpoint, config, image or class list that cannot be used; the message says why."""


def check_output_file(path, example):
    """A file the tool will write at `path`: not a folder, in a folder that exists and is writable;
    checked before any model is loaded (an export takes seconds to fail otherwise)."""
    if os.path.isdir(path):
        raise InferenceError(f"{path} is a folder: give a file to write, e.g. {example}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InferenceError(
            f"cannot write {path}: folder {folder} does not exist; create it first"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InferenceError(f"cannot write {path}: folder {folder} is not writable")


def checkpoint_path(path):
    """The checkpoint directory (holding `model/`) or pretrained file that `path` names."""
    if not os.path.exists(path):
        raise InferenceError(f"{path}: no such checkpoint directory")
    path = os.path.normpath(path)
    if os.path.isdir(path) and not os.path.isdir(os.path.join(path, "model")):
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.basename(path) == "model" and os.path.isdir(os.path.join(parent, "model")):
            return parent  # the `model/` entry of a checkpoint: the checkpoint is its parent
        raise InferenceError(f"{path}: not a checkpoint directory (expected OUTPUT/model_final)")
    return path


def find_config(checkpoint):
    """The run's config.yaml: LiBai writes it to the output directory, above OUTPUT/model_final."""
    here = os.path.abspath(checkpoint)
    for _ in range(3):
        candidate = os.path.join(here, "config.yaml")
        if os.path.isfile(candidate):
            return candidate
        here = os.path.dirname(here)
    return None


def run_config(checkpoint, config=None, model_name=None):
    """The config a tool uses for `checkpoint`: `config` when given, else the run's config.yaml
    above it unless the model is named (a pretrained file with --model NAME has no run)."""
    found = config or find_config(checkpoint)
    return load_config(found) if config or (found and not model_name) else None


def load_config(path):
    try:
        return LazyConfig.load(path)
    except Exception as e:  # noqa: BLE001  (a config that does not load is bad input, whatever raised)
        raise InferenceError(f"{path}: cannot load the config ({type(e).__name__}: {e})") from None


def load_model(checkpoint, cfg=None, model_name=None, attention_weights=False, **overrides):
    """The model of `checkpoint` in eval mode, built from zoo name `model_name` (with `overrides`,
    e.g. num_classes, img_size) or else from `cfg.model`. `attention_weights`: a backend that
    forms them (only the math backend does; "auto" picks it when they are asked for)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if attention_weights:
        overrides["attn_backend"] = "auto"
    if model_name:
        try:
            model = libai_vit.create_model(model_name, **overrides)
        except ValueError as e:
            raise InferenceError(f"--model {model_name}: {e}") from None
    else:
        if cfg is None:
            raise InferenceError(
                f"{checkpoint}: no config.yaml above it: name the model (--model NAME)"
            )
        if "pretrained" in cfg.model:
            cfg.model.pretrained = None  # the checkpoint below has every weight
        for key, value in overrides.items():
            cfg.model[key] = value
        model = instantiate(cfg.model)
    try:
        load_pretrained(model, checkpoint)
    except PretrainedError as e:
        raise InferenceError(str(e)) from None
    return model.eval()


def preprocessing(cfg, model):
    """The config's evaluation transform; without one, the eval transform of the model's data
    config (timm's, from its pretrained_cfg: libai_vit.data.resolve_data_config)."""
    test_transform = (
        OmegaConf.select(cfg, "dataloader.test.0.dataset.transform", default=None) if cfg else None
    )
    if test_transform is not None:
        return instantiate(test_transform)
    return model_eval_transform(model)


# The eval transforms a server can repeat from a description (tools/export_onnx.py writes it into
# the ONNX file; libai_vit.onnx_export.runtime applies it), in the order they must come.
DESCRIBABLE = ("Resize", "CenterCrop", "ToTensor", "Normalize")


def describe_preprocessing(transform):
    """`transform` (Resize, CenterCrop, ToTensor, Normalize, each optional, in that order) as data:
    resize (the short side, or [h, w]), interpolation, crop [h, w] (without a CenterCrop: the
    resized size, square for a short-side resize), mean, std of pixels scaled to [0, 1]."""
    steps = list(getattr(transform, "transforms", [transform]))
    kinds = [type(t).__name__ for t in steps]
    if any(k not in DESCRIBABLE for k in kinds) or kinds != sorted(kinds, key=DESCRIBABLE.index):
        raise InferenceError(
            f"the eval transform {kinds} cannot be written down for a server: only "
            f"{', '.join(DESCRIBABLE)} in this order"
        )
    if "ToTensor" not in kinds:
        raise InferenceError(f"the eval transform {kinds} has no ToTensor")
    step = dict(zip(kinds, steps))
    description = {"resize": None, "interpolation": "bilinear", "crop": None}
    if "Resize" in step:
        size = step["Resize"].size
        size = size[0] if isinstance(size, (list, tuple)) and len(size) == 1 else size
        description["resize"] = list(size) if isinstance(size, (list, tuple)) else int(size)
        description["interpolation"] = step["Resize"].interpolation.value
        description["crop"] = description["resize"]
    if "CenterCrop" in step:
        description["crop"] = list(step["CenterCrop"].size)
    if isinstance(description["crop"], int):
        description["crop"] = [description["crop"]] * 2
    norm = step.get("Normalize")
    description["mean"] = [float(m) for m in norm.mean] if norm else [0.0, 0.0, 0.0]
    description["std"] = [float(s) for s in norm.std] if norm else [1.0, 1.0, 1.0]
    return description


def undo_normalize(transform, image):
    """A preprocessed (C, H, W) image back to displayable (H, W, C) pixels in [0, 1]."""
    pixels = image.numpy().transpose(1, 2, 0)
    norm = [t for t in getattr(transform, "transforms", []) if type(t).__name__ == "Normalize"]
    if norm:
        pixels = pixels * np.array(norm[-1].std, np.float32) + np.array(norm[-1].mean, np.float32)
    return np.clip(pixels, 0.0, 1.0)


def read_images(paths):
    """Every image decoded before any model is built: a typo or broken file fails fast."""
    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise InferenceError(f"{path}: no such image file")
        try:
            images.append(load_rgb(path))
        except (OSError, SyntaxError, ValueError) as e:
            raise InferenceError(
                f"{path}: cannot read the image ({type(e).__name__}: {e})"
            ) from None
    return images


def class_names(cfg, classes_file=None):
    """From `classes_file` (one per line, in label order), else from the config's training
    ImageFolder (its `classes` list or its train/ folder names)."""
    if classes_file:
        try:
            with open(classes_file) as f:
                return [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise InferenceError(
                f"{classes_file}: cannot read the class names ({e.strerror})"
            ) from None
    dataset = OmegaConf.select(cfg, "dataloader.train.dataset.0", default=None) if cfg else None
    if dataset is None:
        raise InferenceError("the config has no training ImageFolder: pass --classes FILE")
    if dataset.get("classes"):
        return list(dataset.classes)
    try:
        return list_classes(os.path.join(dataset.root, "train"))
    except DatasetError as e:
        raise InferenceError(f"{e}: pass --classes FILE") from None


def predict(model, batch, attention_weights=False):
    """Class probabilities (N, classes) as numpy; with `attention_weights`, also each block's
    attention weights (N, heads, tokens, tokens) as numpy."""
    with flow.no_grad():
        out = model(batch, return_weights=True) if attention_weights else model(batch)
    probs = flow.softmax(out["prediction_scores"], dim=-1)
    if probs.is_global:
        probs = probs.to_global(sbp=[flow.sbp.broadcast] * len(probs.sbp)).to_local()
    if not attention_weights:
        return probs.numpy()
    weights = []
    for w in out["attention_weights"]:
        if w.is_global:
            w = w.to_global(sbp=[flow.sbp.broadcast] * len(w.sbp)).to_local()
        weights.append(w.numpy())
    return probs.numpy(), weights
