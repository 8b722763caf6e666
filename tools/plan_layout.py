r"""Which DP x TP x PP layout (and micro-batch) to train a ViT config with, and why.

    .venv/bin/python tools/plan_layout.py configs/common/models/vit/vit_base_patch16_224.py \
        --gpus 8 --mem-gb 16

Estimates per rank the parameter + gradient + AdamW memory, the activations kept for backward
(1F1B keeps up to PP micro-batches on the first stage) and the bytes each rank sends per step, for
every layout the model allows on N processes ("gpus": CPU processes here); ranks those that fit by
estimated step time (FLOPs at --gflops per rank, 1F1B bubble, communication at --link-gbs).
The model: libai_vit.engine.layout_planner (Megatron papers' analytic model applied to this
ViT, fp32).
"""

import argparse
import os
import sys

from libai_vit.config import model_arguments
from libai_vit.engine import layout_planner as planner

MB = 2**20


def load_shape(path):
    """The ViT dims of a LazyConfig file (a model file or a full training config), its global batch
    and its train.dist.pipeline_stage_layers (None when not set)."""
    from libai.config import LazyConfig

    cfg = LazyConfig.load(path)
    batch = split = None
    if "train" in cfg and cfg.train.get("global_batch_size"):
        batch = int(cfg.train.global_batch_size)
    if "train" in cfg and cfg.train.get("dist") and cfg.train.dist.get("pipeline_stage_layers"):
        split = [int(n) for n in cfg.train.dist.pipeline_stage_layers]
    return planner.ViTShape.from_config(model_arguments(cfg)), batch, split


def explain(p, best):
    """Why this plan ranks where it does: its step time against the best, then its costs."""
    why = [
        "fastest that fits" if p is best else f"{p.step_s / best.step_s:.2f}x the best step time"
    ]
    if p.dp > 1 and p.tp == p.pp == 1:
        why.append("weights replicated, only the gradients cross processes")
    return "; ".join(why + p.notes)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "config", help="a LazyConfig file with `model` (e.g. configs/common/models/vit/*.py)"
    )
    ap.add_argument("--gpus", type=int, required=True, help="processes (devices) to lay out")
    ap.add_argument(
        "--mem-gb", type=float, help="memory per process for the model's tensors (a100-80gb: 80)"
    )
    ap.add_argument(
        "--device",
        choices=sorted(planner.DEVICES),
        default="cpu",
        help="memory model and default speeds; only 'cpu' is measured, the others are estimates",
    )
    ap.add_argument(
        "--zero",
        type=int,
        choices=[0, 1, 2],
        default=0,
        help="ZeRO stage (train.zero_optimization)",
    )
    ap.add_argument(
        "--global-batch", type=int, help="images per step (default: the config's, else 32 x gpus)"
    )
    ap.add_argument(
        "--micro-batches", type=int, nargs="+", help="micro-batch sizes to try (default 1..64)"
    )
    ap.add_argument(
        "--gflops",
        type=float,
        default=None,
        help="sustained GFLOP/s per process (default: the device's; benchmarks/training.py "
        "measures OneFlow's CPU matmul)",
    )
    ap.add_argument(
        "--link-gbs",
        type=float,
        default=None,
        help="GB/s between processes (default: the device's)",
    )
    ap.add_argument(
        "--eager",
        action="store_true",
        help="graph.enabled=False: eager memory, pipeline stages one after another",
    )
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()

    dev = planner.DEVICES[args.device]
    args.gflops = args.gflops or dev.gflops
    args.link_gbs = args.link_gbs or dev.link_gbs
    if args.mem_gb is None:
        if args.device != "a100-80gb":
            ap.error("--mem-gb is required")
        args.mem_gb = 80.0
    for flag, value in (
        ("--gpus", args.gpus),
        ("--mem-gb", args.mem_gb),
        ("--global-batch", args.global_batch),
        ("--top", args.top),
        *(("--micro-batches", mb) for mb in args.micro_batches or ()),
    ):
        if value is not None and value <= 0:
            print(f"error: {flag} {value:g}: must be > 0", file=sys.stderr)
            return 2
    m, cfg_batch, stage_layers = load_shape(args.config)
    gbs = args.global_batch or cfg_batch or 32 * args.gpus
    plans = planner.enumerate_plans(
        m,
        args.gpus,
        args.mem_gb * 2**30,
        gbs,
        args.micro_batches,
        args.gflops,
        args.link_gbs,
        zero_stage=args.zero,
        device=args.device,
        stage_layers=stage_layers,
        graph=not args.eager,
    )
    print(
        f"{os.path.basename(args.config)}: embed {m.embed_dim}, depth {m.depth}, heads "
        f"{m.num_heads}, {m.tokens} tokens; {planner.train_flops_per_image(m) / 1e9:.1f} GFLOP per "
        f"image per step; global batch {gbs} on {args.gpus} processes with {args.mem_gb:g} GB each"
        + (f"; device {args.device}: an ESTIMATE, not measured" if args.device != "cpu" else "")
    )
    fits = plans["fits"]
    if not fits and not plans["too_big"]:
        # DP = all processes (TP = PP = 1) is always a layout: a batch of whole micro-batches there
        step = args.gpus * min(args.micro_batches or [1])
        print(
            f"error: no layout of {args.gpus} processes splits the global batch {gbs} into whole "
            f"micro-batches ({', '.join(map(str, args.micro_batches or [1, 2, 4, 8, 16, 32, 64]))})"
            f" x DP: choose --global-batch a multiple of {step} (e.g. {-(-gbs // step) * step})",
            file=sys.stderr,
        )
        return 2
    if not fits:
        smallest = plans["too_big"][0] if plans["too_big"] else None
        print(
            "no layout fits"
            + (
                f"; the smallest needs {smallest.mem_bytes / 2**30:.2f} GB per process "
                f"(DPxTPxPP {smallest.dp}x{smallest.tp}x{smallest.pp}, micro-batch "
                f"{smallest.micro_batch})"
                if smallest
                else ""
            )
        )
        return 1
    header = (
        f"{'rank':>4} {'DPxTPxPP':>9} {'micro':>5} {'M':>3} {'params+opt MB':>13} {'activ. MB':>9} "
        f"{'total MB':>8} {'comm MB/step':>12} {'est. img/s':>10}  why"
    )
    print(header)
    for i, p in enumerate(fits[: args.top], 1):
        print(
            f"{i:>4} {p.dp}x{p.tp}x{p.pp:<5} {p.micro_batch:>5} {p.num_micro:>3} "
            f"{p.param_bytes / MB:>13.0f} {p.act_bytes / MB:>9.0f} {p.mem_bytes / MB:>8.0f} "
            f"{p.comm_bytes / MB:>12.0f} {p.images_per_s:>10.2f}  {explain(p, fits[0])}"
        )
    if len(fits) > args.top:
        print(f"... {len(fits) - args.top} more fit")
    print(
        f"{len(plans['too_big'])} layout/micro-batch choices exceed {args.mem_gb:g} GB per process"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
