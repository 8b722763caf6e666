"""Train-step throughput and peak memory of this ViT against what a user would pick instead.

    nice -n 10 python -m benchmarks.training [--sizes tiny] [--batches 16] [--rounds 2] ...

Cases, each a fresh process (multi-rank layouts under OneFlow's launcher;
benchmarks/training_workers.py), run interleaved in rounds so that load on the shared machine hits
every case alike:
  matmul        OneFlow's single-threaded fp32 1024^3 matmul with the OpenBLAS core type in use:
                the per-process roofline (MFU); `--openblas default` adds the library's own CPU
                detection
  numpy_matmul  the machine's own: numpy's OpenBLAS (its own detection), 1 thread and
                threads = cores
  ours          this project's ViT, eager and nn.Graph, layouts 1x1x1 2x1x1 1x2x1 1x1x2 (DPxTPxPP)
  libai         LiBai 0.1.1's libai.models.VisionTransformer, 1 process (compat fixes only)
  torch         timm's ViT on PyTorch CPU eager (the timm venv), 2 threads and 1 thread
The median of a case's timed steps is kept, and across rounds the best median (least disturbed).
Writes results/benchmark/benchmark.csv (+ summary.csv with the ratios, benchmark.png); the targets
those ratios are held to are in results/benchmark/README.md. The VM-scheduler study is
benchmarks/vm_scheduler.py.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = os.path.join(ROOT, "benchmarks", "training_workers.py")
TORCH_PY = os.path.join(ROOT, ".venv-timm", "bin", "python")
SIZES = {
    "tiny": "vit_tiny_patch16_224",
    "small": "vit_small_patch16_224",
    "base": "vit_base_patch16_224",
}
with open(os.path.join(ROOT, "libai_vit", "models", "timm_zoo.json")) as _f:
    ZOO = json.load(_f)  # the zoo's table (read as data: the driver does not import OneFlow)
LAYOUTS = {"1x1x1": (1, 1, 1), "2x1x1": (2, 1, 1), "1x2x1": (1, 2, 1), "1x1x2": (1, 1, 2)}


# ------------------------------------------------------------------------------------------ parent
def launch(case, timeout, script=WORKERS, torch_python=TORCH_PY):
    """Run `case` in fresh process(es) of this python (OneFlow's) or the timm venv's; returns the
    per-rank results (or raises with the log tail)."""
    nproc = case.get("nproc", 1)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "rank")
        py = torch_python if case["impl"] == "torch" else sys.executable
        args = [script, json.dumps(case), prefix]
        if nproc > 1:
            # our launcher: a failed rank ends the others, the port is held, timeout ends every rank
            cmd = [
                py,
                os.path.join(ROOT, "libai_vit", "launch.py"),
                "--nproc_per_node",
                str(nproc),
                "--timeout",
                str(timeout),
                *args,
            ]
        else:
            cmd = [py, *args]
        env = dict(
            os.environ,
            PYTHONPATH=ROOT,
            GLOG_minloglevel="2",
            # OneFlow's CPU kernels run one thread per process; torch/numpy get the threads
            # asked for
            OMP_NUM_THREADS=str(case.get("threads", 1)),
            OPENBLAS_NUM_THREADS=str(case.get("threads", 1)),
        )
        core = case.get("openblas")
        if core == "default" or case["impl"] in ("numpy_matmul", "torch"):
            # the library's own CPU detection (and this project's .pth kept out of it)
            env.pop("OPENBLAS_CORETYPE", None)
            env["LIBAI_VIT_OPENBLAS_PTH"] = "0"
        elif core:
            env["OPENBLAS_CORETYPE"] = core
        if case.get("kernels") == "off":  # OneFlow's own CPU kernels instead of libai_vit's
            env["LIBAI_VIT_KERNELS"] = "0"
        if case.get("independent"):
            # `independent` lone processes at once, no communication: DP's ceiling on this machine
            procs = [
                subprocess.Popen(
                    [py, script, json.dumps(case), f"{prefix}{k}"],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for k in range(case["independent"])
            ]
            outs = [p.communicate(timeout=timeout) for p in procs]
            if any(p.returncode for p in procs):
                raise RuntimeError(
                    f"{case['name']} failed:\n" + "".join(o[1][-2000:] for o in outs)
                )
            return [json.load(open(f"{prefix}{k}.0.json")) for k in range(case["independent"])]
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{case['name']} failed ({proc.returncode}):\n"
                f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            )
        return [json.load(open(f"{prefix}.{r}.json")) for r in range(nproc)]


def build_cases(args):
    cases = [dict(name="matmul", impl="matmul", n=1024, steps=10)]
    # the machine's own matmul: numpy's OpenBLAS on one core and on all of them
    cases += [
        dict(name=f"numpy_matmul/{t}thr", impl="numpy_matmul", n=1024, steps=10, threads=t)
        for t in sorted({1, os.cpu_count()})
    ]
    if "2x1x1" in args.layouts:
        # the machine's own ceiling for DP=2: sustained matmul in 1 process vs in 2 at once
        cases += [
            dict(name=f"matmul/{p}proc-sustained", impl="matmul", n=1024, seconds=5, nproc=p)
            for p in (1, 2)
        ]
    if args.planner_baseline:
        cases.append(dict(name="baseline", impl="baseline", layout=[1, 1, 1]))
    common = dict(warmup=args.warmup, steps=args.steps)
    for size in args.sizes:
        model = SIZES[size]
        for mb in args.batches:
            for lay in args.layouts:
                dp, tp, pp = LAYOUTS[lay]
                heads = ZOO[model]["kwargs"]["num_heads"]  # TP must divide the heads
                if heads % tp:
                    print(f"skip {size} {lay}: {heads} heads do not split over TP={tp}")
                    continue
                # the pipeline takes the same images per rank and step, cut into --num-micro
                # micro-batches
                splits = [(mb // m, m) for m in args.num_micro] if pp > 1 else [(mb, 1)]
                for micro, acc in splits:
                    for mode in args.modes:
                        if pp > 1 and mode == "eager":
                            continue  # pipeline stages run only in nn.Graph
                        for attn in args.attn:
                            case = dict(
                                name=f"ours/{mode}/{size}/mb{micro}/{lay}/acc{acc}/{attn}",
                                impl="ours",
                                model=model,
                                graph=mode == "graph",
                                layout=[dp, tp, pp],
                                nproc=dp * tp * pp,
                                micro_batch=micro,
                                num_micro=acc,
                                attn=attn,
                                quiet_vm=True,
                                **common,
                            )
                            cases.append(case)
                            if dp == 2 and tp == pp == 1 and args.independent_too:
                                # two lone 1x1x1 processes at once, the same images each: DP=2 minus
                                # its all-reduce and synchronisation
                                cases.append(
                                    dict(
                                        case,
                                        name=case["name"].replace("/2x1x1/", "/2x1x1-independent/"),
                                        layout=[1, 1, 1],
                                        nproc=1,
                                        independent=2,
                                    )
                                )
                            if args.spin_too and mode == "graph":
                                cases.append(
                                    dict(case, name=case["name"] + "/spin", quiet_vm=False)
                                )
                    if pp > 1 and "graph" in args.modes:
                        # the pipeline's reference: one process, the same micro-batches by
                        # gradient accumulation
                        cases.append(
                            dict(
                                name=f"ours/graph/{size}/mb{micro}/1x1x1/acc{acc}/{args.attn[0]}",
                                impl="ours",
                                model=model,
                                graph=True,
                                layout=[1, 1, 1],
                                nproc=1,
                                micro_batch=micro,
                                num_micro=acc,
                                attn=args.attn[0],
                                quiet_vm=True,
                                **common,
                            )
                        )
            if not args.no_libai:
                # "naive": stock LiBai with the minimal CPU LayerNorm; "ours": with libai_vit's
                # LayerNorm
                for mode in args.modes:
                    for norm in args.libai_norms:
                        cases.append(
                            dict(
                                name=f"libai/{mode}/{size}/mb{mb}/1x1x1/acc1/{norm}-ln",
                                impl="libai",
                                model=model,
                                graph=mode == "graph",
                                layout=[1, 1, 1],
                                nproc=1,
                                micro_batch=mb,
                                num_micro=1,
                                attn="math",
                                norm=norm,
                                **common,
                            )
                        )
            if not args.no_torch:
                for threads in args.torch_threads:
                    cases.append(
                        dict(
                            name=f"torch/eager/{size}/mb{mb}/{threads}thr",
                            impl="torch",
                            model=model,
                            threads=threads,
                            micro_batch=mb,
                            **common,
                        )
                    )
    if "default" in args.openblas:
        # the same OneFlow cases with the OpenBLAS kernel the library picks by itself: the "before"
        cases += [
            dict(c, name=c["name"] + "@default", openblas="default")
            for c in cases
            if c["impl"] in ("matmul", "ours", "libai") and "seconds" not in c
        ]
    if args.kernels_off_too:
        # the same cases of ours on OneFlow's own CPU kernels (LIBAI_VIT_KERNELS=0): the "before"
        cases += [
            dict(c, name=c["name"] + "@kernels-off", kernels="off")
            for c in cases
            if c["impl"] == "ours" and "kernels" not in c
        ]
    unique = {c["name"]: c for c in cases}  # the pipeline reference may repeat a 1x1x1 case
    return list(unique.values())


def row_of(case, ranks, rnd, load, core_gflops):
    from libai_vit.engine.layout_planner import ViTShape, train_flops_per_image
    from libai_vit.models.zoo import model_kwargs

    row = dict(
        case=case["name"],
        impl=case["impl"],
        round=rnd,
        load_1min=round(load, 2),
        peak_rss_mb=round(max(r["peak_rss_mb"] for r in ranks), 1),
        openblas=ranks[0].get("core")
        or case.get("openblas")
        or ("" if case["impl"] == "torch" else os.environ.get("OPENBLAS_CORETYPE", "")),
    )
    if case["impl"] in ("matmul", "numpy_matmul", "baseline"):
        if case["impl"] != "baseline":
            row["gflops_per_proc"] = round(statistics.mean(r["gflops"] for r in ranks), 2)
            row["threads"] = case.get("threads", 1)
        return row
    nproc = case.get("nproc", 1) * case.get("independent", 1)
    step_s = max(statistics.median(r["times"]) for r in ranks)  # the slowest rank sets the pace
    images = (
        case["micro_batch"] * case["num_micro"] * case.get("layout", [1])[0]
        if case["impl"] != "torch"
        else case["micro_batch"]
    )
    images *= case.get("independent", 1)
    kw = model_kwargs(case["model"])
    flops = train_flops_per_image(
        ViTShape(
            **{k: kw[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads")}
        )
    )
    cores = case.get("threads", nproc)
    row.update(
        model=case["model"],
        mode="graph" if case.get("graph") else "eager",
        layout="x".join(map(str, case.get("layout", [1, 1, 1]))),
        nproc=nproc,
        threads=cores,
        micro_batch=case["micro_batch"],
        num_micro=case.get("num_micro", 1),
        attn=case.get("attn", "math"),
        step_s=round(step_s, 3),
        images_per_s=round(images / step_s, 3),
        gflops_per_proc=round(images / step_s * flops / 1e9 / cores, 2),
        mfu=round(images / step_s * flops / 1e9 / cores / core_gflops, 3),
    )
    if all("cpu_s" in r for r in ranks):
        cpu_s = sum(r["cpu_s"] for r in ranks)  # every process's compute CPU seconds per step
        row.update(
            cpu_s=round(cpu_s, 3),
            images_per_cpu_s=round(images / cpu_s, 3),
            mfu_cpu=round(images / cpu_s * flops / 1e9 / core_gflops, 3),
        )
    return row


def summarize(rows):
    """Best round per case, and the ratios the issue asks for."""
    best = {}
    for r in rows:
        key = (
            "images_per_s"
            if "images_per_s" in r
            else "gflops_per_proc"
            if "gflops_per_proc" in r
            else None
        )
        if key and (r["case"] not in best or r[key] > best[r["case"]][key]):
            best[r["case"]] = r
    return best


def ratios(best, size, mb, num_micros, attn):
    """{name: value} of the ratios results/benchmark/README.md holds to its targets."""

    def ips(name):
        return best[name]["images_per_s"] if name in best else None

    def ratio(a, b):
        return None if a is None or b is None else a / b

    def per_cpu(name):
        return best[name].get("images_per_cpu_s") if name in best else None

    g1 = ips(f"ours/graph/{size}/mb{mb}/1x1x1/acc1/{attn}")
    e1 = ips(f"ours/eager/{size}/mb{mb}/1x1x1/acc1/{attn}")
    ours1 = max(x for x in (g1, e1) if x is not None) if g1 or e1 else None
    lib = [
        x
        for x in (
            ips(f"libai/graph/{size}/mb{mb}/1x1x1/acc1/naive-ln"),
            ips(f"libai/eager/{size}/mb{mb}/1x1x1/acc1/naive-ln"),
        )
        if x is not None
    ]
    dp2 = max(
        (
            x
            for x in (
                ips(f"ours/graph/{size}/mb{mb}/2x1x1/acc1/{attn}"),
                ips(f"ours/eager/{size}/mb{mb}/2x1x1/acc1/{attn}"),
            )
            if x is not None
        ),
        default=None,
    )
    lone2 = ips(f"ours/graph/{size}/mb{mb}/2x1x1-independent/acc1/{attn}")
    torch1, torch2 = ips(f"torch/eager/{size}/mb{mb}/1thr"), ips(f"torch/eager/{size}/mb{mb}/2thr")
    mfu = max(
        (
            best[n]["mfu"]
            for n in best
            if n.startswith("ours/") and f"/{size}/mb{mb}/1x1x1/" in n and "@" not in n
        ),
        default=None,
    )
    out = {
        "ours 1 proc MFU (of OneFlow matmul)": mfu,
        "ours nn.Graph 1 proc / PyTorch 1 thread": ratio(g1, torch1),
        "the same, by images per CPU second": ratio(
            per_cpu(f"ours/graph/{size}/mb{mb}/1x1x1/acc1/{attn}"),
            per_cpu(f"torch/eager/{size}/mb{mb}/1thr"),
        ),
        "ours 1 proc MFU by CPU time": best.get(
            f"ours/graph/{size}/mb{mb}/1x1x1/acc1/{attn}", {}
        ).get("mfu_cpu"),
        "ours nn.Graph 1 proc, OpenBLAS default kernel / PyTorch 1 thread": ratio(
            ips(f"ours/graph/{size}/mb{mb}/1x1x1/acc1/{attn}@default"), torch1
        ),
        "ours / LiBai stock (1 proc, best mode each)": ratio(ours1, max(lib) if lib else None),
        "ours DP=2 / PyTorch eager 2 threads": ratio(dp2, torch2),
        "ours DP=2 / ours 1 proc": ratio(dp2, ours1),
        "two lone processes at once / ours 1 proc": ratio(lone2, g1),
        "ours DP=2 nn.Graph / two lone processes at once": ratio(
            ips(f"ours/graph/{size}/mb{mb}/2x1x1/acc1/{attn}"), lone2
        ),
    }
    for m in num_micros:
        pp = ips(f"ours/graph/{size}/mb{mb // m}/1x1x2/acc{m}/{attn}")
        pp_ref = ips(f"ours/graph/{size}/mb{mb // m}/1x1x1/acc{m}/{attn}")
        ideal = m / (m + 1)
        out[f"1F1B M={m} efficiency / ideal M/(M+P-1)"] = (
            pp / (2 * pp_ref) / ideal if pp and pp_ref else None
        )
    return out


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = sorted(
        (r for r in summarize(rows).values() if "images_per_s" in r), key=lambda r: r["case"]
    )
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * len(best) + 1.5), sharey=True)
    names = [r["case"] for r in best]
    colors = [
        {"ours": "tab:blue", "libai": "tab:gray", "torch": "tab:orange"}[r["impl"]] for r in best
    ]
    axes[0].barh(names, [r["images_per_s"] for r in best], color=colors)
    axes[0].set_xlabel("train images/s (all processes)")
    axes[1].barh(names, [r["peak_rss_mb"] for r in best], color=colors)
    axes[1].set_xlabel("peak RSS per process (MB)")
    axes[0].invert_yaxis()
    fig.suptitle(
        "ViT train step on a 2-core CPU (blue: libai_vit, gray: LiBai 0.1.1, orange: timm/PyTorch)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=os.path.join(ROOT, "results", "benchmark"))
    p.add_argument("--sizes", nargs="+", default=["tiny"], choices=list(SIZES))
    p.add_argument(
        "--batches", nargs="+", type=int, default=[16], help="micro-batch per data-parallel rank"
    )
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    p.add_argument("--modes", nargs="+", default=["eager", "graph"], choices=["eager", "graph"])
    p.add_argument("--attn", nargs="+", default=["math"], choices=["math", "flash", "auto"])
    p.add_argument(
        "--num-micro",
        nargs="+",
        type=int,
        default=[2, 4],
        help="micro-batches per step of the 1x1x2 pipeline",
    )
    p.add_argument(
        "--spin-too",
        action="store_true",
        help="also run every nn.Graph case of ours with OneFlow's VM scheduler left spinning "
        "at full priority",
    )
    p.add_argument(
        "--independent-too",
        action="store_true",
        help="with layout 2x1x1: also two lone 1x1x1 processes at once "
        "(DP=2 without communication)",
    )
    p.add_argument("--torch-threads", nargs="+", type=int, default=[2, 1])
    p.add_argument("--no-libai", action="store_true")
    p.add_argument(
        "--libai-norms",
        nargs="+",
        default=["naive", "ours"],
        choices=["naive", "ours"],
        help="CPU LayerNorm patched into LiBai's ViT",
    )
    p.add_argument("--no-torch", action="store_true")
    p.add_argument(
        "--planner-baseline", action="store_true", help="also measure a model-less rank's RSS"
    )
    p.add_argument(
        "--warmup", type=int, default=1, help="untimed steps (the first compiles nn.Graph)"
    )
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="interleaved passes over all cases")
    p.add_argument("--timeout", type=int, default=900, help="seconds per case")
    p.add_argument(
        "--openblas",
        nargs="+",
        default=["chosen"],
        choices=["chosen", "default"],
        help="OneFlow's OpenBLAS kernel: the one set-up chose (tools/openblas_coretype.py) and/or "
        "the one the library detects by itself "
        "('default': every OneFlow case again, named @default)",
    )
    p.add_argument("--roofline-only", action="store_true", help="only the matmul cases")
    p.add_argument("--torch-python", default=TORCH_PY, help="the timm venv's python")
    p.add_argument(
        "--kernels-off-too",
        action="store_true",
        help="also each case of ours on OneFlow's own CPU kernels (LIBAI_VIT_KERNELS=0)",
    )
    return p


def main():
    args = parser().parse_args()
    from tools.openblas_coretype import choose, users_coretype

    if not args.no_torch and not os.path.exists(args.torch_python):
        sys.exit(f"error: no timm venv at {args.torch_python}: pass --torch-python (or --no-torch)")
    core = users_coretype() or choose()
    if core:
        # every OneFlow case inherits it, unless run @default
        os.environ["OPENBLAS_CORETYPE"] = core
    print(
        f"OpenBLAS core type for OneFlow: {core or '(the library default)'}; "
        f"load {os.getloadavg()}",
        flush=True,
    )
    os.makedirs(args.out, exist_ok=True)
    cases = build_cases(args)
    if args.roofline_only:
        cases = [c for c in cases if "matmul" in c["impl"]]
    rows, core_gflops = [], None
    csv_path = os.path.join(args.out, "benchmark.csv")
    for rnd in range(args.rounds):
        for case in cases:
            load = os.getloadavg()[0]
            t0 = time.time()
            try:
                ranks = launch(case, args.timeout, torch_python=args.torch_python)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"[round {rnd}] {case['name']}: FAILED {str(e)[-1500:]}", flush=True)
                rows.append(
                    dict(
                        case=case["name"],
                        impl=case["impl"],
                        round=rnd,
                        load_1min=round(load, 2),
                        error=str(e).strip().splitlines()[-1][:200],
                    )
                )
                continue
            if case["name"] == "matmul":
                core_gflops = max(core_gflops or 0, ranks[0]["gflops"])
            row = row_of(case, ranks, rnd, load, core_gflops)
            rows.append(row)
            print(
                f"[round {rnd}] {case['name']}: "
                f"{row.get('images_per_s', row.get('gflops_per_proc'))} "
                f"(peak {row['peak_rss_mb']} MB, load {load:.1f}, {time.time() - t0:.0f}s)",
                flush=True,
            )
            fields = [
                "case",
                "impl",
                "openblas",
                "model",
                "mode",
                "layout",
                "nproc",
                "threads",
                "micro_batch",
                "num_micro",
                "attn",
                "round",
                "load_1min",
                "step_s",
                "images_per_s",
                "gflops_per_proc",
                "mfu",
                "cpu_s",
                "images_per_cpu_s",
                "mfu_cpu",
                "peak_rss_mb",
                "error",
            ]
            # rewritten after every case: a cut run keeps its rows
            with open(csv_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
    best = summarize(rows)
    lines = [
        f"OneFlow 1-thread matmul: {core_gflops:.1f} GFLOP/s per process"
        if core_gflops
        else "matmul: n/a"
    ]
    for name in sorted(
        n for n in best if n == "matmul" or n.startswith(("matmul@", "numpy_matmul/"))
    ):
        lines.append(
            f"{name}: {best[name]['gflops_per_proc']:.1f} GFLOP/s "
            f"({best[name]['threads']} thread(s), "
            f"{best[name]['openblas'] or 'own detection'})"
        )
    sustained = [best.get(f"matmul/{p}proc-sustained", {}).get("gflops_per_proc") for p in (1, 2)]
    if all(sustained):
        lines.append(
            "sustained matmul, 2 processes at once / 1 process: "
            f"{2 * sustained[1] / sustained[0]:.2f}x "
            f"(the machine's ceiling for DP=2 scaling)"
        )
    summary = []
    for size in args.sizes:
        for mb in args.batches:
            for name, value in ratios(best, size, mb, args.num_micro, args.attn[0]).items():
                if value is not None:
                    lines.append(f"{size} mb{mb}  {name}: {value:.2f}")
                    summary.append(
                        dict(size=size, micro_batch=mb, ratio=name, value=round(value, 3))
                    )
    with open(os.path.join(args.out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["size", "micro_batch", "ratio", "value"])
        w.writeheader()
        w.writerows(summary)
    print("\n".join(lines))
    plot(rows, os.path.join(args.out, "benchmark.png"))


if __name__ == "__main__":
    main()
