"""Images per second the ImageNet recipe's train loader delivers, against timm's PyTorch loader
with the same transforms on the same files.

    nice -n 10 python -m benchmarks.loader --images /tmp/loader_jpegs --workers 0 1 2 \
        --torch-python /path/to/timm-venv/bin/python

Writes --count synthetic ImageNet-sized JPEGs (about 500x375, ~100 KB, in an ImageFolder) under
--images first if it holds none: data is never committed. Ours: libai_vit's ImageFolder + the
recipe's train_transform (RandomResizedCrop 224 bicubic, flip, RandAugment rand-m9-mstd0.5-inc1,
normalise, random erasing 0.25) through OneFlow's DataLoader with the global-batch sampler,
per-sample augmentation seeds and LiBai's collate, then the batch made a global tensor as the
trainer does. timm: its create_transform with the same arguments, torchvision's ImageFolder, torch's
DataLoader. Each (side, workers) runs in its own process, interleaved over --rounds; the best
round is kept.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/common/data/imagenet.py's defaults
RECIPE = dict(
    img_size=224,
    scale=(0.08, 1.0),
    hflip=0.5,
    auto_augment="rand-m9-mstd0.5-inc1",
    color_jitter=0.4,
    re_prob=0.25,
    interpolation="bicubic",
)


def make_jpegs(root, count, classes=10, seed=0):
    """`count` photo-like JPEGs (smooth colour fields + texture + edges, quality 90) in
    root/train/<class>/."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = (500, 375) if i % 3 else (375, 500)
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        base = np.stack(
            [
                np.sin(xx * rng.uniform(2, 9) + rng.uniform(0, 6)) * np.cos(yy * rng.uniform(2, 9))
                for _ in range(3)
            ],
            -1,
        ) * 90 + rng.uniform(60, 190, 3)
        pixels = np.clip(base + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(0.8))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = int(rng.uniform(0, w)), int(rng.uniform(0, h))
            draw.ellipse(
                [x0, y0, x0 + int(rng.uniform(10, 120)), y0 + int(rng.uniform(10, 120))],
                fill=tuple(int(c) for c in rng.integers(0, 255, 3)),
            )
        folder = os.path.join(root, "train", f"class{i % classes:02d}")
        os.makedirs(folder, exist_ok=True)
        img.save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def cpu_seconds():
    """CPU seconds of this process and its live children (the loader's workers): on a loaded machine
    images per CPU second say what a core of its own would deliver."""
    tick = os.sysconf("SC_CLK_TCK")
    t = os.times()
    total = t.user + t.system
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        children = []
    for child in children:
        try:
            with open(f"/proc/{child}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def run_ours(root, workers, batch, batches):
    import oneflow as flow
    from libai.data.build import build_image_train_loader

    from libai_vit.data.build import seeded_loader_inputs
    from libai_vit.data.folder import ImageFolder
    from libai_vit.data.sampler import GlobalBatchSampler
    from libai_vit.data.transforms import train_transform

    dataset = ImageFolder(root, train=True, transform=train_transform(**RECIPE))
    sampler = GlobalBatchSampler(len(dataset), batch, seed=0)
    dataset, sampler = seeded_loader_inputs(dataset, sampler, seed=0)
    loader, _, _ = build_image_train_loader(dataset, batch, sampler=sampler, num_workers=workers)
    placement = flow.placement("cpu", [0])

    def to_global(data):
        # what the trainer's get_batch does with each field: a broadcast global tensor on the rank
        return {
            k: v.tensor.to_global(placement=placement, sbp=flow.sbp.broadcast)
            for k, v in data.get_fields().items()
        }

    it = iter(loader)
    to_global(next(it)), to_global(next(it))  # workers started and warm
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        out = to_global(next(it))
    out["images"].numpy()
    return time.perf_counter() - t0, cpu_seconds() - c0


def run_timm(root, workers, batch, batches):
    import torch
    from PIL import ImageOps
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    from generators import timm_venv  # noqa: F401  (declares torchvision's ops: before timm is imported)

    # timm's RandAugment "inc1" with magnitude noise can ask Posterize for 0 bits, which the timm
    # venv's Pillow rejects (older Pillow returned a black image): clamp, so the loader runs at all
    posterize = ImageOps.posterize
    ImageOps.posterize = lambda image, bits: posterize(image, min(max(int(bits), 1), 8))

    torch.set_num_threads(1)
    transform = create_transform(
        input_size=RECIPE["img_size"],
        is_training=True,
        scale=RECIPE["scale"],
        hflip=RECIPE["hflip"],
        auto_augment=RECIPE["auto_augment"],
        color_jitter=RECIPE["color_jitter"],
        re_prob=RECIPE["re_prob"],
        re_mode="pixel",
        re_count=1,
        interpolation=RECIPE["interpolation"],
    )
    dataset = ImageFolder(os.path.join(root, "train"), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )

    def forever():
        while True:
            yield from loader

    it = forever()
    next(it), next(it)
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        images, _ = next(it)
    return time.perf_counter() - t0, cpu_seconds() - c0


def worker_main(side, root, workers, batch, batches):
    seconds, cpu = (run_ours if side == "ours" else run_timm)(root, workers, batch, batches)
    print(
        json.dumps(
            dict(
                side=side,
                workers=workers,
                images_per_s=batch * batches / seconds,
                images_per_cpu_s=batch * batches / cpu,
            )
        )
    )


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--images", default="/tmp/libai_vit_loader_jpegs", help="ImageFolder root (made if empty)"
    )
    p.add_argument("--count", type=int, default=320, help="JPEGs to write when --images has none")
    p.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=12, help="timed batches per case")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--torch-python", default=os.path.join(ROOT, ".venv-timm", "bin", "python"))
    p.add_argument("--side", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return worker_main(args.side, args.images, args.workers[0], args.batch, args.batches)
    if not os.path.isdir(os.path.join(args.images, "train")):
        print(f"writing {args.count} JPEGs under {args.images}", flush=True)
        make_jpegs(args.images, args.count)
    sides = ["ours"] + (["timm"] if os.path.exists(args.torch_python) else [])
    best = {}
    for rnd in range(args.rounds):
        for workers in args.workers:
            for side in sides:
                py = sys.executable if side == "ours" else args.torch_python
                env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2", OMP_NUM_THREADS="1")
                load = os.getloadavg()[0]
                proc = subprocess.run(
                    [
                        py,
                        os.path.abspath(__file__),
                        "--side",
                        side,
                        "--images",
                        args.images,
                        "--workers",
                        str(workers),
                        "--batch",
                        str(args.batch),
                        "--batches",
                        str(args.batches),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
                if proc.returncode != 0:
                    print(
                        f"[round {rnd}] {side} workers={workers}: FAILED\n{proc.stderr[-2000:]}",
                        flush=True,
                    )
                    continue
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                print(
                    f"[round {rnd}] {side:4s} workers={workers}: "
                    f"{res['images_per_s']:6.1f} images/s, "
                    f"{res['images_per_cpu_s']:6.1f} per CPU second (load {load:.1f})",
                    flush=True,
                )
                for key in ("images_per_s", "images_per_cpu_s"):
                    best[(side, workers, key)] = max(best.get((side, workers, key), 0.0), res[key])
    print(
        "best of rounds: images/s wall (per worker process) | "
        "images per CPU second (all loader processes)"
    )
    for workers in args.workers:
        row = [f"workers={workers}"]
        for side in sides:
            if (side, workers, "images_per_s") in best:
                ips, cps = (
                    best[(side, workers, "images_per_s")],
                    best[(side, workers, "images_per_cpu_s")],
                )
                row.append(f"{side} {ips:6.1f} ({ips / max(workers, 1):5.1f}) | {cps:6.1f}")
        if len(sides) == 2 and all((s, workers, "images_per_cpu_s") in best for s in sides):
            row.append(
                "ours/timm per CPU second %.2f"
                % (
                    best[("ours", workers, "images_per_cpu_s")]
                    / best[("timm", workers, "images_per_cpu_s")]
                )
            )
        print("  ".join(row))


if __name__ == "__main__":
    main()
