"""Draw the class token's attention over the image, one panel per head of the last block.

    python tools/visualize_attention.py IMAGE CHECKPOINT [--model NAME --num-classes C --img-size S]
                                        [--out attention.png] [--block -1]

CHECKPOINT is a LiBai checkpoint's model directory (output/model_final/model) or the directory
holding it. The model is built from `--model` (a zoo name, with --num-classes/--img-size) or else
from the config.yaml that LiBai saved in the training output directory. The image is resized to the
model's input size and normalised with ImageNet's mean and std.
"""
import argparse
import os
import sys

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputError(Exception):
    """A file that cannot be used; the message names it and says why."""


def find_model_dir(path):
    if not os.path.exists(path):
        raise InputError(f"{path}: no such checkpoint directory")
    model_dir = os.path.join(path, "model") if os.path.isdir(os.path.join(path, "model")) else path
    if not os.path.isdir(model_dir):
        raise InputError(f"{path}: not a checkpoint directory (expected output/model_final/model)")
    return model_dir


def find_config(model_dir):
    """config.yaml of the training run: LiBai writes it to the output dir, above model_final/model."""
    here = os.path.abspath(model_dir)
    for _ in range(3):
        candidate = os.path.join(here, "config.yaml")
        if os.path.isfile(candidate):
            return candidate
        here = os.path.dirname(here)
    return None


def build_model(args, model_dir):
    from libai_vit.models.zoo import model_kwargs

    if args.model:
        overrides = {k: v for k, v in (("num_classes", args.num_classes), ("img_size", args.img_size)) if v}
        try:
            kwargs = model_kwargs(args.model, **overrides)
        except ValueError as e:
            raise InputError(f"--model {args.model}: {e}")
        from libai_vit import VisionTransformer

        # only the math backend forms attention weights; "auto" picks it when they are asked for
        return VisionTransformer(**{**kwargs, "attn_backend": "auto"})
    config = find_config(model_dir)
    if config is None:
        raise InputError(f"{model_dir}: no config.yaml above it: pass --model NAME (and --num-classes, --img-size)")
    from libai.config import LazyConfig, instantiate

    try:
        cfg = LazyConfig.load(config)
    except Exception as e:  # a config that does not load is bad input, whatever the parser raised
        raise InputError(f"{config}: cannot load the config ({type(e).__name__}: {e})")
    cfg.model.attn_backend = "auto"
    for key, value in (("num_classes", args.num_classes), ("img_size", args.img_size)):
        if value:
            cfg.model[key] = value
    return instantiate(cfg.model)


def load_weights(model, model_dir):
    import oneflow as flow

    try:
        state = flow.load(model_dir, global_src_rank=0)
    except Exception as e:
        raise InputError(f"{model_dir}: cannot load the weights ({type(e).__name__}: {str(e).splitlines()[0]})")
    try:
        model.load_state_dict(state)
    except Exception as e:
        raise InputError(f"{model_dir}: weights do not fit the model ({' '.join(str(e).split())[:300]})")


def load_image(path, size):
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise InputError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: cannot read the image ({e})")
    resized = rgb.resize((size[1], size[0]), Image.BICUBIC)
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    normed = (pixels - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return pixels, normed.transpose(2, 0, 1)[None].copy()


def class_token_maps(model, batch, block):
    """(heads, grid_h, grid_w): the class token's attention to each patch in `block`, per head."""
    import oneflow as flow

    model.eval()
    with flow.no_grad():
        weights = model(flow.tensor(batch), return_weights=True)["attention_weights"][block]
    if weights.is_global:
        weights = weights.to_global(sbp=[flow.sbp.broadcast] * len(weights.sbp)).to_local()
    w = weights.numpy()[0]  # (heads, tokens, tokens)
    prefix = model.num_prefix_tokens
    # with a class token, its row; without one (global_pool="avg"), the attention each patch receives
    rows = w[:, 0, prefix:] if prefix else w.mean(axis=1)
    grid = model.patch_embed.grid_size
    return rows.reshape(w.shape[0], grid[0], grid[1])


def draw(pixels, maps, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = maps.shape[0]
    cols = min(heads + 1, 7)
    rows = -(-(heads + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    panels = [("image", None)] + [(f"head {h}", maps[h]) for h in range(heads)]
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, heat) in zip(axes.flat, panels):
        ax.imshow(pixels)
        if heat is not None:
            ax.imshow(heat, cmap="inferno", alpha=0.6, interpolation="nearest",
                      extent=(0, pixels.shape[1], pixels.shape[0], 0))
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("checkpoint", help="output/model_final/model (or output/model_final)")
    p.add_argument("--model", help="zoo name, e.g. vit_base_patch16_224 (default: the run's config.yaml)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--block", type=int, default=-1, help="which block's attention (default: the last)")
    p.add_argument("--out", default=None, help="PNG to write (default: attention_<image name>.png)")
    args = p.parse_args(argv)
    out = args.out or f"attention_{os.path.splitext(os.path.basename(args.image))[0]}.png"
    try:
        if not os.path.isfile(args.image):  # before building a model: a typo should fail fast
            raise InputError(f"{args.image}: no such image file")
        model_dir = find_model_dir(args.checkpoint)
        import libai_vit  # noqa: F401  (compat fixes)

        model = build_model(args, model_dir)
        load_weights(model, model_dir)
        size = model.patch_embed.img_size
        pixels, batch = load_image(args.image, size)
        if not -model.depth <= args.block < model.depth:
            raise InputError(f"--block {args.block}: the model has {model.depth} blocks")
        maps = class_token_maps(model, batch, args.block)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    block = args.block % model.depth
    draw(pixels, maps, out, f"{os.path.basename(args.image)}: class-token attention, block {block}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
