"""Each rank's peak resident memory in a real training run, per layout, against one process.

    nice python -m benchmarks.memory [--size base] [--layouts 1x1x1 1x2x2] [--pretrained]

Every case is `tools/train.sh tools/train_net.py` on the digits (upscaled to the model's 224 px):
build the model, (load a timm-format file of it), compile the nn.Graph, train `--steps` steps at
global batch `--batch` with AdamW, save one checkpoint. A sampler reads every rank's VmRSS from
/proc every 0.2 s and keeps the peak and a timeline (the phases: import, build, load, graph,
steps, save). Cases run one after another (never two at once: the numbers are per process, and
the machine's memory is shared). Prints a table of per-rank peaks and their ratio to the 1x1x1
peak, and the median step time after the first two; writes results/memory/memory.csv and
results/memory/timeline_<case>.csv. A layout name is DPxTPxPP, then `sp` for sequence parallelism,
then `ac` for activation checkpointing of every block, `acK` of every K-th, `aca` / `acKa` of their
attention only. `--eager` trains without nn.Graph (the pipeline stages then run one after
another). `--resume` runs every case a second time from the checkpoint it saved (`--resume`, one
more step): the row `<case>+resume` is that run's peaks; `--file-only` runs only the cases with the
file. `--depth` keeps a size's width and makes it shallower; an odd micro-batch trains without
mixup, on a hard-label loss.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from libai_vit.config import HARD_LABEL_LOSS
from libai_vit.engine import layout_planner as planner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "projects", "imagenet_finetune", "configs", "demo_digits_pretrain.py")
_VIT = dict(patch_size=16, mlp_ratio=4.0)
SIZES = {  # timm's shapes, but "tiny" (the runtime's own share) has 4 heads so that TP=2 splits it
    "tiny": dict(embed_dim=192, depth=12, num_heads=4, **_VIT),
    "base": dict(embed_dim=768, depth=12, num_heads=12, **_VIT),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, **_VIT),
    # vit_giant_patch14_dinov2's blocks (1.1B parameters): packed SwiGLU, LayerScale
    "giant": dict(
        embed_dim=1536,
        depth=40,
        num_heads=24,
        patch_size=14,
        mlp_ratio=5.33334,
        mlp_layer="swiglu_packed",
        act_layer="silu",
        init_values=1e-5,
    ),
}
TAG = "LIBAI_VIT_MEMORY_RUN"
NUM_CLASSES = 5  # the config's model.num_classes


def parse_layout(name):
    """(dp, tp, pp, sequence parallel, recompute: None or (every, granularity))."""
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)(sp)?(ac(\d*)(a?))?", name)
    if not m:
        raise SystemExit(
            f"layout {name!r}: write DPxTPxPP[sp][ac[K][a]], e.g. 1x2x2sp or 1x1x1ac2a"
        )
    recompute = None
    if m.group(5):
        recompute = (int(m.group(6) or 1), "attention" if m.group(7) else "block")
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), bool(m.group(4)), recompute


def model_kwargs(args):
    """The VisionTransformer kwargs of the run's model (its size, image size and --depth)."""
    kwargs = dict(SIZES[args.size], img_size=args.img_size, num_classes=NUM_CLASSES)
    if args.depth:
        kwargs["depth"] = args.depth
    return kwargs


def run_name(args):
    """The size, depth and mode in the result files' names, e.g. giant_d8_eager."""
    return f"{args.size}{f'_d{args.depth}' if args.depth else ''}{'_eager' if args.eager else ''}"


def planner_estimate_gib(layout, args):
    """libai_vit.engine.layout_planner's peak for the worst rank of this case, in GiB."""
    dp, tp, pp, sp, ac = parse_layout(layout)
    shape = planner.ViTShape.from_config(model_kwargs(args))
    plan = planner.plan(
        shape,
        dp,
        tp,
        pp,
        args.batch // dp // args.micro_batches,
        args.micro_batches,
        graph=not args.eager,
        sequence_parallel=sp,
        recompute=planner.Recompute(*ac) if ac else None,
    )
    return planner.rank_peak_bytes(plan, graph=not args.eager) / 2**30


def rank_processes(tag):
    """{rank: pid} of the run's rank processes (launch.py --run-rank children)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if env.get(TAG.encode()) == tag.encode() and b"--run-rank" in cmd:
            found[int(env.get(b"RANK", b"0"))] = int(pid)
    return found


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def sample(tag, stop, peaks, timeline, start):
    while not stop.is_set():
        for rank, pid in rank_processes(tag).items():
            kib = rss_kib(pid)
            if kib is not None:
                peaks[rank] = max(peaks.get(rank, 0), kib)
                timeline.append((round(time.time() - start, 1), rank, kib))
        time.sleep(0.2)


def write_timm_file(kwargs, path):
    """A timm-format safetensors of the model (this project's export), as a user's file."""
    code = (
        "import sys, numpy as np\n"
        "from safetensors.numpy import save_file\n"
        "import libai_vit\n"
        "from libai_vit.pretrained.timm_format import from_libai\n"
        f"m = libai_vit.VisionTransformer(**{kwargs!r})\n"
        "state = {k: v.numpy() for k, v in m.state_dict().items()}\n"
        "save_file(from_libai(state, m), sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, path], check=True, cwd=ROOT)


def run_case(layout, args, data, out_dir, pretrained, resume=False):
    dp, tp, pp, sp, ac = parse_layout(layout)
    kwargs = model_kwargs(args)
    micro = args.batch // dp // args.micro_batches
    overrides = [
        f"train.output_dir={out_dir}",
        f"dataloader.root={data}",
        f"dataloader.train.dataset.0.root={data}",
        f"dataloader.test.0.dataset.root={data}",
        *(f"model.{k}={v}" for k, v in kwargs.items()),
        f"train.dist.data_parallel_size={dp}",
        f"train.dist.tensor_parallel_size={tp}",
        f"train.dist.pipeline_parallel_size={pp}",
        f"train.dist.sequence_parallel={sp}",
        f"train.activation_checkpoint.enabled={ac is not None}",
        f"train.activation_checkpoint.every={ac[0] if ac else 1}",
        f"train.activation_checkpoint.granularity={ac[1] if ac else 'block'}",
        f"graph.enabled={not args.eager}",
        f"train.global_batch_size={args.batch}",
        f"train.train_micro_batch_size={micro}",
        f"train.num_accumulation_steps={args.micro_batches}",
        f"train.train_iter={args.steps + resume}",
        f"train.checkpointer.period={args.steps}",
        "train.evaluation.enabled=False",
        "train.log_period=1",
        "optim.params.layer_decay=1.0",
    ]
    if pretrained:
        overrides.append(f"model.pretrained={pretrained}")
    if micro % 2:  # flowvision's mixup pairs a batch's images
        overrides += ["dataloader.train.mixup_func=null", HARD_LABEL_LOSS]
    if kwargs["depth"] % pp:
        raise SystemExit(f"depth {kwargs['depth']} does not split evenly over PP={pp}")
    tag = uuid.uuid4().hex
    env = dict(os.environ, **{TAG: tag})
    cmd = ["bash", os.path.join(ROOT, "tools", "train.sh"), "tools/train_net.py", CONFIG]
    cmd += [str(dp * tp * pp), *overrides, *(["--resume"] if resume else [])]
    peaks, timeline, stop, start = {}, [], threading.Event(), time.time()
    sampler = threading.Thread(target=sample, args=(tag, stop, peaks, timeline, start))
    sampler.start()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    stop.set()
    sampler.join()
    if proc.returncode:
        tail = (proc.stdout + proc.stderr)[-3000:]
        print(f"{layout}: exited with {proc.returncode} (check dmesg for the OOM killer)\n{tail}")
    return proc.returncode, peaks, timeline, time.time() - start, step_time(out_dir)


def step_time(out_dir):
    """The median of LiBai's per-step `time` after the first two steps (compilation), or None."""
    try:
        with open(os.path.join(out_dir, "metrics.json")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except OSError:
        return None
    times = sorted(r["time"] for r in rows if "time" in r and r.get("iteration", 0) >= 2)
    return round(times[len(times) // 2], 2) if times else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="base")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--layouts", nargs="+", default=["1x1x1", "1x2x2"])
    p.add_argument("--batch", type=int, default=4, help="global batch")
    p.add_argument("--micro-batches", type=int, default=2, help="per step (1F1B under PP)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--pretrained", action="store_true", help="also load a timm-format file")
    p.add_argument("--file-only", action="store_true", help="with --pretrained: only with it")
    p.add_argument("--eager", action="store_true", help="train without nn.Graph")
    p.add_argument("--resume", action="store_true", help="then resume each case once more")
    p.add_argument("--depth", type=int, help="the size's width with this many blocks")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "memory"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from libai_vit.data.digits import write_digits_imagefolder

        data = write_digits_imagefolder(os.path.join(tmp, "digits"))
        file = None
        if args.pretrained:
            file = os.path.join(tmp, f"vit_{args.size}.safetensors")
            write_timm_file(model_kwargs(args), file)
        runs = [
            (layout, pretrained, resume)
            for layout in args.layouts
            for pretrained in (([file] if args.file_only else [None, file]) if file else [None])
            for resume in ([False, True] if args.resume else [False])
        ]
        for layout, pretrained, resume in runs:
            case = f"{layout}{'+file' if pretrained else ''}"
            rc, peaks, timeline, wall, step_s = run_case(
                layout, args, data, os.path.join(tmp, case), pretrained, resume
            )
            case += "+resume" if resume else ""
            with open(
                os.path.join(args.out, f"timeline_{run_name(args)}_{case}.csv"),
                "w",
            ) as f:
                w = csv.writer(f)
                w.writerow(["seconds", "rank", "rss_kib"])
                w.writerows(timeline)
            for rank in sorted(peaks):
                rows.append(
                    dict(
                        size=args.size,
                        case=case,
                        rank=rank,
                        rc=rc,
                        peak_gib=round(peaks[rank] / 2**20, 3),
                        wall_s=round(wall, 1),
                        step_s=step_s,
                        mode="eager" if args.eager else "graph",
                    )
                )
    base = {  # the plain 1x1x1 run, with and without the file
        r["case"].replace("1x1x1", ""): r["peak_gib"]
        for r in rows
        if r["case"] in ("1x1x1", "1x1x1+file")
    }
    print(
        f"{'case':<16} {'rc':>3} {'per-rank peak GiB':<36} {'max/1x1x1':>9} {'sum':>7} "
        f"{'step s':>7} {'planner GiB':>11} {'max/planner':>11}"
    )
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        ref = base.get("+file" if "+file" in case else "")
        peaks = [r["peak_gib"] for r in mine]
        ratio = f"{max(peaks) / ref:.2f}" if ref else "-"
        estimate = planner_estimate_gib(case.split("+")[0], args)
        for r in mine:
            r["ratio_to_1x1x1"], r["planner_gib"] = ratio, round(estimate, 3)
        print(
            f"{case:<16} {mine[0]['rc']:>3} {' '.join(f'{x:.2f}' for x in peaks):<36} "
            f"{ratio:>9} {sum(peaks):>7.2f} {mine[0]['step_s'] or '-':>7} {estimate:>11.2f} "
            f"{max(peaks) / estimate:>11.2f}"
        )
    if not rows:
        raise SystemExit("no case ran: see the messages above")
    name = f"memory_{run_name(args)}.csv"
    with open(os.path.join(args.out, name), "w") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
