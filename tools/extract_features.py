"""Dense features of images: each requested block's feature map (NCHW, timm's forward_intermediates)
saved as numpy, and a picture of each map's first 3 principal components as RGB (the usual picture
of DINOv2 features: parts that look alike get alike colours).

    python tools/extract_features.py CHECKPOINT IMAGE [IMAGE ...] [--model NAME --img-size S]
                                     [--config FILE] [--blocks -1] [--norm] [--out-dir features]

CHECKPOINT is a run's checkpoint directory (OUTPUT/model_final) or a pretrained file with --model
NAME (e.g. vit_small_patch14_reg4_dinov2 with the DINOv2 release file). Each image is preprocessed
as the run's config evaluates (else by the model's data config); per image, OUT_DIR/<name>.npz holds
"block<i>": that block's (channels, H, W) map (the final norm applied with --norm), and
OUT_DIR/<name>.png the image beside the maps' principal components.
"""

import argparse
import os
import sys

import numpy as np
import oneflow as flow

from libai_vit import inference


def principal_components_rgb(feature_map, k=3):
    """(C, H, W) -> (H, W, k) in [0, 1]: each pixel's projection on the first k principal
    components of the map's pixels, each component rescaled to [0, 1]."""
    c, h, w = feature_map.shape
    pixels = feature_map.reshape(c, h * w).T.astype(np.float64)
    pixels -= pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(pixels, full_matrices=False)
    proj = pixels @ vt[:k].T
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    proj = (proj - lo) / np.where(hi > lo, hi - lo, 1.0)
    return proj.reshape(h, w, k)


def draw(pixels, maps, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("image", pixels)] + [
        (f"block {i}: PCA", principal_components_rgb(m)) for i, m in maps.items()
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8), squeeze=False)
    for ax, (name, picture) in zip(axes.flat, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="CHECKPOINT IMAGE [IMAGE ...]")
    p.add_argument("--config", help="the run's config (default: the config.yaml above CHECKPOINT)")
    p.add_argument("--model", help="zoo name, e.g. vit_small_patch14_reg4_dinov2")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument(
        "--blocks",
        type=int,
        nargs="+",
        default=[-1],
        help="block indices, negative from the end (default: the last)",
    )
    p.add_argument("--norm", action="store_true", help="apply the final norm to each map")
    p.add_argument("--out-dir", default="features")
    args = p.parse_args(argv)
    if len(args.paths) < 2:
        p.error("give CHECKPOINT and at least one IMAGE")
    image_paths = args.paths[1:]
    try:
        checkpoint = inference.checkpoint_path(args.paths[0])
        images = inference.read_images(image_paths)
        cfg = inference.run_config(checkpoint, args.config, args.model)
        model = inference.load_model(checkpoint, cfg, args.model, img_size=args.img_size)
        depth = len(model.blocks)
        bad = [b for b in args.blocks if not -depth <= b < depth]
        if bad:
            raise inference.InferenceError(f"--blocks {bad}: the model has {depth} blocks")
        transform = inference.preprocessing(cfg, model)
    except inference.InferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    blocks = [b % depth for b in args.blocks]
    batch = flow.stack([transform(img) for img in images])
    with flow.no_grad():
        maps = model.forward_intermediates(
            batch, indices=blocks, norm=args.norm, intermediates_only=True
        )
    maps = [m.to_global(sbp=[flow.sbp.broadcast] * len(m.sbp)).to_local().numpy() for m in maps]
    os.makedirs(args.out_dir, exist_ok=True)
    for n, path in enumerate(image_paths):
        stem = os.path.join(args.out_dir, os.path.splitext(os.path.basename(path))[0])
        per_block = {b: m[n] for b, m in zip(blocks, maps)}
        np.savez(stem + ".npz", **{f"block{b}": m for b, m in per_block.items()})
        pixels = inference.undo_normalize(transform, batch[n])
        draw(pixels, per_block, stem + ".png", os.path.basename(path))
        shapes = ", ".join(f"block {b} {tuple(m.shape)}" for b, m in per_block.items())
        print(f"wrote {stem}.npz ({shapes}) and {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
