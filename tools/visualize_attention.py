"""Draw the class token's attention over the image, one panel per head of one block (the last).

    python tools/visualize_attention.py CHECKPOINT IMAGE [--model NAME --num-classes C --img-size S]
                                        [--out attention.png] [--block -1]

CHECKPOINT is a run's checkpoint directory (OUTPUT/model_final, or its `model/` entry) or a
pretrained file with --model NAME. The model is built from `--model` (a zoo name, with
--num-classes/--img-size) or else from the run's config.yaml; the image is preprocessed as the
config's evaluation does (libai_vit.inference).
"""

import argparse
import os
import sys

from libai_vit import inference


def class_token_maps(model, weights):
    """(heads, grid_h, grid_w): the class token's attention to each patch, per head, from one
    block's weights (heads, tokens, tokens)."""
    prefix = model.num_prefix_tokens
    # with a class token, its row; without one (global_pool="avg"), what each patch receives
    rows = weights[:, 0, prefix:] if prefix else weights.mean(axis=1)
    grid = model.patch_embed.grid_size
    return rows.reshape(weights.shape[0], grid[0], grid[1])


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
            ax.imshow(
                heat,
                cmap="inferno",
                alpha=0.6,
                interpolation="nearest",
                extent=(0, pixels.shape[1], pixels.shape[0], 0),
            )
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="output/model_final (or output/model_final/model)")
    p.add_argument("image")
    p.add_argument("--config", help="the run's config (default: the config.yaml above CHECKPOINT)")
    p.add_argument(
        "--model", help="zoo name, e.g. vit_base_patch16_224 (default: the run's config.yaml)"
    )
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument(
        "--block", type=int, default=-1, help="which block's attention (default: the last)"
    )
    p.add_argument("--out", default=None, help="PNG to write (default: attention_<image name>.png)")
    args = p.parse_args(argv)
    out = args.out or f"attention_{os.path.splitext(os.path.basename(args.image))[0]}.png"
    try:
        inference.check_output_file(out, os.path.join(out, "attention.png"))
        checkpoint = inference.checkpoint_path(args.checkpoint)
        (image,) = inference.read_images([args.image])
        config = args.config or inference.find_config(checkpoint)
        cfg = inference.load_config(config) if args.config or (config and not args.model) else None
        model = inference.load_model(
            checkpoint,
            cfg,
            args.model,
            attention_weights=True,
            num_classes=args.num_classes,
            img_size=args.img_size,
        )
        if not -model.depth <= args.block < model.depth:
            raise inference.InferenceError(
                f"--block {args.block}: the model has {model.depth} blocks"
            )
        transform = inference.preprocessing(cfg, model)
    except inference.InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pixels = transform(image)
    _, weights = inference.predict(model, pixels[None], attention_weights=True)
    maps = class_token_maps(model, weights[args.block][0])
    block = args.block % model.depth
    draw(
        inference.undo_normalize(transform, pixels),
        maps,
        out,
        f"{os.path.basename(args.image)}: class-token attention, block {block}",
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
