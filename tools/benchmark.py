"""Train-step throughput and peak memory of this ViT against what a user would pick instead.

    nice -n 5 .venv/bin/python tools/benchmark.py [--sizes tiny] [--batches 32] [--rounds 2] ...

Cases, each a fresh process (multi-rank layouts under OneFlow's launcher), run interleaved in rounds
so that load on the shared machine hits every case alike:
  matmul        OneFlow's single-threaded fp32 matmul GFLOP/s: the per-process roofline (MFU)
  ours          this project's ViT, eager and nn.Graph, layouts 1x1x1 2x1x1 1x2x1 1x1x2 (DPxTPxPP)
  libai         LiBai 0.1.1's libai.models.VisionTransformer, 1 process (compat fixes only)
  torch         timm's ViT on PyTorch CPU eager (.venv-timm), 2 threads and 1 thread
A step is forward + backward + AdamW on synthetic images (no data loading), timed after warm-up;
the median of the timed steps is kept, and across rounds the best median (least disturbed).
Writes results/benchmark/benchmark.csv (+ summary.csv with the ratios, benchmark.png).
"""
import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OF_PY = os.path.join(ROOT, ".venv", "bin", "python")
TORCH_PY = os.path.join(ROOT, ".venv-timm", "bin", "python")
SIZES = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224"}
_SIZE_HEADS = {"tiny": 3, "small": 6, "base": 12}  # TP must divide the heads
LAYOUTS = {"1x1x1": (1, 1, 1), "2x1x1": (2, 1, 1), "1x2x1": (1, 2, 1), "1x1x2": (1, 1, 2)}


# ------------------------------------------------------------------------------------------ workers
def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_steps(step, warmup, steps):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def worker_matmul(case):
    import oneflow as flow

    n = case["n"]
    a, b = flow.randn(n, n), flow.randn(n, n)
    if "seconds" in case:
        # sustained throughput over a window that all ranks share: what concurrent processes get
        flow.matmul(a, b).numpy()
        flow.comm.barrier()
        t0, reps = time.perf_counter(), 0
        while time.perf_counter() - t0 < case["seconds"]:
            flow.matmul(a, b).numpy()
            reps += 1
        return {"gflops": 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9, "times": []}
    times = _time_steps(lambda: flow.matmul(a, b).numpy(), 2, case["steps"])
    # the fastest repetition: a roofline is what the kernel can do, not what a loaded machine lets it do
    return {"gflops": 2 * n ** 3 / min(times) / 1e9, "times": times}


def worker_baseline(case):
    """What a launched OneFlow rank costs before any model: subtracted from peak RSS by the planner test."""
    import libai_vit  # noqa: F401
    from libai_vit import parallel
    from omegaconf import DictConfig

    dp, tp, pp = case["layout"]
    parallel.setup(DictConfig(dict(data_parallel_size=dp, tensor_parallel_size=tp, pipeline_parallel_size=pp)),
                   case.get("depth", 12))
    return {"times": []}


def worker_oneflow(case):
    """ours / libai: a train step on this rank; every rank reports its own time and peak memory."""
    import oneflow as flow

    step = build_oneflow_step(case)
    times = _time_steps(step, case["warmup"], case["steps"])
    flow.comm.barrier()
    return {"times": times}


def worker_timeline(case):
    """Which threads of this rank are busy when, over timed nn.Graph steps: a bar of 100 ms buckets of
    the compute threads' CPU use (# > 2/3 of a core, + > 1/3, . > 1/10) and each busy thread's share."""
    import threading

    import oneflow as flow

    from libai_vit.engine.vm_scheduler import thread_cpu_seconds

    step = build_oneflow_step(case)
    _time_steps(step, case["warmup"], 0)
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.perf_counter(), thread_cpu_seconds()))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times = _time_steps(step, 0, case["steps"])
    done.set()
    sampler.join()
    flow.comm.barrier()
    (t0, first), (t1, last) = samples[0], samples[-1]
    used = {t: [a - b for a, b in zip(last[t], first.get(t, (0.0, 0.0)))] for t in last}
    compute = [t for t in used if used[t][0] > 0.1 * (t1 - t0)]  # user time: kernels run in user space
    bar = ""
    for k in range(int((t1 - t0) / 0.1)):
        lo, hi = t0 + 0.1 * k, t0 + 0.1 * (k + 1)
        window = [x for x in samples if lo <= x[0] <= hi]
        if len(window) < 2:
            bar += "?"
            continue
        (a_t, a), (b_t, b) = window[0], window[-1]
        busy = sum(b.get(t, (0, 0))[0] - a.get(t, (0, 0))[0] for t in compute) / (b_t - a_t)
        bar += "#" if busy > 2 / 3 else "+" if busy > 1 / 3 else "." if busy > 0.1 else " "
    shares = sorted(((u + s) / (t1 - t0), s / (t1 - t0), t) for t, (u, s) in used.items())[::-1][:5]
    return {"times": times, "bar": bar,
            "threads": [dict(tid=t, cpu=round(c, 2), system=round(sy, 2)) for c, sy, t in shares]}


def worker_vm_ab(case):
    """OneFlow's VM scheduler thread spinning at full priority vs lowered to nice 19, in one process
    set: blocks of steps alternate between the two, so that the machine's drift falls on both."""
    import oneflow as flow

    from libai_vit.engine import vm_scheduler

    step = build_oneflow_step(dict(case, quiet_vm=False))
    found = _lower_vm_scheduler(step)
    flow.comm.barrier()
    step()  # after a barrier a step's time would miss the previous step's backward and update
    times = {"spin": [], "quiet": []}
    for block in range(2 * case["blocks"]):
        mode = ("spin", "quiet")[block % 2]
        if found:
            os.setpriority(os.PRIO_PROCESS, found[0], vm_scheduler.NICE if mode == "quiet" else 0)
        times[mode] += _time_steps(step, 0, case["steps"])
    return {"times": times["quiet"], "spin_times": times["spin"], "found": found}


def build_oneflow_step(case):
    """A train step (forward, backward, AdamW) of `case` on this rank, as a function that waits for it."""
    import oneflow as flow

    import libai_vit
    from libai_vit import parallel
    from libai_vit.engine import vm_scheduler
    from libai_vit.models.zoo import model_kwargs
    from omegaconf import DictConfig

    kw = model_kwargs(case["model"], **case.get("overrides", {}))
    dp, tp, pp = case["layout"]
    parallel.setup(DictConfig(dict(data_parallel_size=dp, tensor_parallel_size=tp, pipeline_parallel_size=pp)),
                   kw["depth"])
    flow.manual_seed(0)
    if case["impl"] != "libai":
        model = libai_vit.create_model(case["model"], attn_backend=case["attn"], **case.get("overrides", {}))
    else:
        from libai.models import VisionTransformer

        if case["norm"] == "naive":
            import libai_vit.layers.norm as norm

            def naive_layer_norm(x, weight, bias, eps):
                """The CPU LayerNorm anyone would write to get LiBai running (OneFlow 0.9 has no CPU
                kernel): the minimal patch. libai_vit's is the same arithmetic, 4x faster."""
                centered = x - x.mean(dim=-1, keepdim=True)
                y = centered * flow.rsqrt((centered * centered).mean(dim=-1, keepdim=True) + eps)
                return y * weight + bias

            norm.layer_norm = naive_layer_norm

        model = VisionTransformer(img_size=kw["img_size"], patch_size=kw["patch_size"], embed_dim=kw["embed_dim"],
                                  depth=kw["depth"], num_heads=kw["num_heads"], num_classes=1000)
    model.train()
    optimizer = flow.optim.AdamW(model.parameters(), lr=1e-4)
    micro, acc = case["micro_batch"], case["num_micro"]
    size = kw["img_size"]
    images = flow.randn(micro * dp * acc, 3, size, size, placement=parallel.placement(parallel.FIRST),
                        sbp=parallel.batch_sbp())
    labels = flow.randint(0, 1000, (micro * dp * acc,), placement=parallel.placement(parallel.LAST),
                          sbp=parallel.batch_sbp())
    everywhere = flow.placement("cpu", list(range(flow.env.get_world_size())))

    def sync(loss):
        # every rank waits for the loss (its stage's work and everything before it is then done)
        loss.to_global(placement=everywhere, sbp=flow.sbp.broadcast).to_local().numpy()

    if case["graph"]:
        from libai.models.utils import GraphBase

        if case["impl"] == "libai":
            # LiBai's own set_pipeline_stage_id (run even at PP=1) also writes `.config.stage_id` on
            # parameters, whose OneFlow 0.9 proxies lack `.config` (compat.py adds it to modules only)
            from oneflow.nn.graph import GraphTensor
            from oneflow.nn.graph.proxy import ProxyTensor

            ProxyTensor.config = property(lambda self: self.to(GraphTensor))

        graph = GraphBase(model, optimizer, None, grad_acc_steps=acc, is_train=True)

        def step():
            sync(graph(images=images, labels=labels)["losses"])
    else:
        image_parts, label_parts = images.chunk(acc, dim=0), labels.chunk(acc, dim=0)

        def step():
            for x, y in zip(image_parts, label_parts):
                loss = model(images=x, labels=y)["losses"] / acc
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            sync(loss)

    if case.get("quiet_vm") and vm_scheduler.wanted(case["graph"]):
        _lower_vm_scheduler(step)  # as libai_vit's trainer does
    return step


def _lower_vm_scheduler(step):
    """Compile, then lower OneFlow's VM scheduler thread that spins through a step (vm_scheduler.py)."""
    from libai_vit.engine import vm_scheduler

    step()
    watch = vm_scheduler.SpinningSchedulerWatch()
    watch.start()
    step()
    return watch.lower()


def worker_torch(case):
    import torch

    # timm imports torchvision, whose CUDA build's C ops do not load beside the CPU torch; its Python
    # side only needs these op schemas to exist (as in tools/make_timm_fixtures.py)
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import timm

    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    model = timm.create_model(case["model"], pretrained=False).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    micro = case["micro_batch"]
    images, labels = torch.randn(micro, 3, 224, 224), torch.randint(0, 1000, (micro,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return {"times": _time_steps(step, case["warmup"], case["steps"])}


def run_worker(case_json, out_prefix):
    case = json.loads(case_json)
    fn = {"matmul": worker_matmul, "baseline": worker_baseline, "ours": worker_oneflow, "libai": worker_oneflow,
          "torch": worker_torch, "timeline": worker_timeline, "vm_ab": worker_vm_ab}[case["impl"]]
    result = fn(case)
    rank = 0
    if case["impl"] != "torch":
        import oneflow as flow

        rank = flow.env.get_rank()  # the launcher's RANK; a lone process may see RANK=-1 in its env
    result.update(rank=rank, peak_rss_mb=_peak_rss_mb())
    with open(f"{out_prefix}.{rank}.json", "w") as f:
        json.dump(result, f)


# ------------------------------------------------------------------------------------------ parent
def launch(case, timeout):
    """Run `case` in fresh process(es); returns the per-rank results (or raises with the log tail)."""
    nproc = case.get("nproc", 1)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "rank")
        py = TORCH_PY if case["impl"] == "torch" else OF_PY
        script = [os.path.abspath(__file__), "--worker", json.dumps(case), "--out", prefix]
        if nproc > 1:
            # our launcher: a failed rank ends the others, the port is held, timeout ends every rank
            cmd = [py, os.path.join(ROOT, "libai_vit", "launch.py"), "--nproc_per_node", str(nproc),
                   "--timeout", str(timeout), *script]
        else:
            cmd = [py, *script]
        env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2",
                   # OneFlow's CPU kernels run one thread per process; torch gets the threads asked for
                   OMP_NUM_THREADS=str(case.get("threads", 1)))
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{case['name']} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return [json.load(open(f"{prefix}.{r}.json")) for r in range(nproc)]


def build_cases(args):
    cases = [dict(name="matmul", impl="matmul", n=1024, steps=10)]
    if "2x1x1" in args.layouts:
        # the machine's own ceiling for DP=2: sustained matmul in 1 process vs in 2 at once
        cases += [dict(name=f"matmul/{p}proc-sustained", impl="matmul", n=1024, seconds=5, nproc=p) for p in (1, 2)]
    if args.planner_baseline:
        cases.append(dict(name="baseline", impl="baseline", layout=[1, 1, 1]))
    common = dict(warmup=args.warmup, steps=args.steps)
    for size in args.sizes:
        model = SIZES[size]
        for mb in args.batches:
            for lay in args.layouts:
                dp, tp, pp = LAYOUTS[lay]
                if _SIZE_HEADS[size] % tp:
                    print(f"skip {size} {lay}: {_SIZE_HEADS[size]} heads do not split over TP={tp}")
                    continue
                # the pipeline takes the same images per rank and step, cut into --num-micro micro-batches
                splits = [(mb // m, m) for m in args.num_micro] if pp > 1 else [(mb, 1)]
                for micro, acc in splits:
                    for mode in args.modes:
                        if pp > 1 and mode == "eager":
                            continue  # pipeline stages run only in nn.Graph
                        for attn in args.attn:
                            case = dict(name=f"ours/{mode}/{size}/mb{micro}/{lay}/acc{acc}/{attn}", impl="ours",
                                        model=model, graph=mode == "graph", layout=[dp, tp, pp], nproc=dp * tp * pp,
                                        micro_batch=micro, num_micro=acc, attn=attn, quiet_vm=True, **common)
                            cases.append(case)
                            if args.spin_too and mode == "graph":
                                cases.append(dict(case, name=case["name"] + "/spin", quiet_vm=False))
                    if pp > 1 and "graph" in args.modes:
                        # the pipeline's reference: one process, the same micro-batches by gradient accumulation
                        cases.append(dict(name=f"ours/graph/{size}/mb{micro}/1x1x1/acc{acc}/{args.attn[0]}",
                                          impl="ours", model=model, graph=True, layout=[1, 1, 1], nproc=1,
                                          micro_batch=micro, num_micro=acc, attn=args.attn[0], quiet_vm=True,
                                          **common))
            if not args.no_libai:
                # "naive": stock LiBai with the minimal CPU LayerNorm; "ours": with libai_vit's LayerNorm
                for mode in args.modes:
                    for norm in args.libai_norms:
                        cases.append(dict(name=f"libai/{mode}/{size}/mb{mb}/1x1x1/acc1/{norm}-ln", impl="libai",
                                          model=model, graph=mode == "graph", layout=[1, 1, 1], nproc=1,
                                          micro_batch=mb, num_micro=1, attn="math", norm=norm, **common))
            if not args.no_torch:
                for threads in args.torch_threads:
                    cases.append(dict(name=f"torch/eager/{size}/mb{mb}/{threads}thr", impl="torch", model=model,
                                      threads=threads, micro_batch=mb, **common))
    unique = {c["name"]: c for c in cases}  # the pipeline reference may repeat a 1x1x1 case
    return list(unique.values())


def row_of(case, ranks, rnd, load, core_gflops):
    from libai_vit.models.zoo import model_kwargs
    from libai_vit.planner import ViTShape, train_flops_per_image

    row = dict(case=case["name"], impl=case["impl"], round=rnd, load_1min=round(load, 2),
               peak_rss_mb=round(max(r["peak_rss_mb"] for r in ranks), 1))
    if case["impl"] in ("matmul", "baseline"):
        if case["impl"] == "matmul":
            row["gflops_per_proc"] = round(statistics.mean(r["gflops"] for r in ranks), 2)
        return row
    nproc = case.get("nproc", 1)
    step_s = max(statistics.median(r["times"]) for r in ranks)  # the slowest rank sets the pace
    images = case["micro_batch"] * case["num_micro"] * case.get("layout", [1])[0] if case["impl"] != "torch" \
        else case["micro_batch"]
    kw = model_kwargs(case["model"])
    flops = train_flops_per_image(ViTShape(**{k: kw[k] for k in ("img_size", "patch_size", "embed_dim", "depth",
                                                                 "num_heads")}))
    cores = case.get("threads", nproc)
    row.update(model=case["model"], mode="graph" if case.get("graph") else "eager",
               layout="x".join(map(str, case.get("layout", [1, 1, 1]))), nproc=nproc, threads=cores,
               micro_batch=case["micro_batch"], num_micro=case.get("num_micro", 1), attn=case.get("attn", "math"),
               step_s=round(step_s, 3), images_per_s=round(images / step_s, 3),
               gflops_per_proc=round(images / step_s * flops / 1e9 / cores, 2),
               mfu=round(images / step_s * flops / 1e9 / cores / core_gflops, 3))
    return row


def summarize(rows):
    """Best round per case, and the ratios the issue asks for."""
    best = {}
    for r in rows:
        key = "images_per_s" if "images_per_s" in r else "gflops_per_proc" if "gflops_per_proc" in r else None
        if key and (r["case"] not in best or r[key] > best[r["case"]][key]):
            best[r["case"]] = r
    return best


def ratios(best, size, mb, num_micros, attn):
    def ips(name):
        return best[name]["images_per_s"] if name in best else None

    def ratio(a, b, target):
        return None if a is None or b is None else (a / b, target)

    g1 = ips(f"ours/graph/{size}/mb{mb}/1x1x1/acc1/{attn}")
    e1 = ips(f"ours/eager/{size}/mb{mb}/1x1x1/acc1/{attn}")
    ours1 = max(x for x in (g1, e1) if x is not None) if g1 or e1 else None
    lib = [x for x in (ips(f"libai/graph/{size}/mb{mb}/1x1x1/acc1/naive-ln"),
                       ips(f"libai/eager/{size}/mb{mb}/1x1x1/acc1/naive-ln")) if x is not None]
    dp2 = max((x for x in (ips(f"ours/graph/{size}/mb{mb}/2x1x1/acc1/{attn}"),
                           ips(f"ours/eager/{size}/mb{mb}/2x1x1/acc1/{attn}")) if x is not None), default=None)
    torch2 = ips(f"torch/eager/{size}/mb{mb}/2thr")
    mfu = max((best[n]["mfu"] for n in best if n.startswith(f"ours/") and f"/{size}/mb{mb}/1x1x1/" in n), default=None)
    out = {
        "ours 1 proc MFU (of OneFlow matmul)": (mfu, 0.70) if mfu is not None else None,
        "ours / LiBai stock (1 proc, best mode each)": ratio(ours1, max(lib) if lib else None, 2.5),
        "ours DP=2 / PyTorch eager 2 threads": ratio(dp2, torch2, 0.5),
        "ours DP=2 / ours 1 proc": ratio(dp2, ours1, 1.8),
    }
    for m in num_micros:
        pp = ips(f"ours/graph/{size}/mb{mb // m}/1x1x2/acc{m}/{attn}")
        pp_ref = ips(f"ours/graph/{size}/mb{mb // m}/1x1x1/acc{m}/{attn}")
        ideal = m / (m + 1)
        out[f"1F1B M={m} efficiency / ideal M/(M+P-1)"] = \
            ratio(pp / (2 * pp_ref), ideal, 0.85) if pp and pp_ref else None
    return out


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = sorted((r for r in summarize(rows).values() if "images_per_s" in r), key=lambda r: r["case"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * len(best) + 1.5), sharey=True)
    names = [r["case"] for r in best]
    colors = [{"ours": "tab:blue", "libai": "tab:gray", "torch": "tab:orange"}[r["impl"]] for r in best]
    axes[0].barh(names, [r["images_per_s"] for r in best], color=colors)
    axes[0].set_xlabel("train images/s (all processes)")
    axes[1].barh(names, [r["peak_rss_mb"] for r in best], color=colors)
    axes[1].set_xlabel("peak RSS per process (MB)")
    axes[0].invert_yaxis()
    fig.suptitle("ViT train step on a 2-core CPU (blue: libai_vit, gray: LiBai 0.1.1, orange: timm/PyTorch)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _our_graph_cases(args):
    args.no_libai = args.no_torch = True
    return [c for c in build_cases(args) if c["impl"] == "ours" and c["graph"]]


def compare_vm_scheduler(args):
    """--vm-ab: each nn.Graph case of ours with the VM scheduler spinning vs lowered, alternating."""
    out = []
    for case in _our_graph_cases(args):
        ranks = launch(dict(case, impl="vm_ab", blocks=args.rounds), args.timeout)
        per_step = {k: [max(ts) for ts in zip(*(r[k] for r in ranks))] for k in ("times", "spin_times")}
        quiet, spin = (statistics.median(per_step[k]) for k in ("times", "spin_times"))
        line = (f"{case['name']}: step {spin:.2f} s spinning, {quiet:.2f} s lowered: {spin / quiet:.2f}x "
                f"({len(per_step['times'])} steps each, {args.rounds} alternating blocks)")
        print(line, flush=True)
        out.append(dict(case=case["name"], spin_step_s=round(spin, 3), quiet_step_s=round(quiet, 3),
                        speedup=round(spin / quiet, 3), steps=len(per_step["times"]), blocks=args.rounds,
                        spin_steps=" ".join(f"{t:.2f}" for t in per_step["spin_times"]),
                        quiet_steps=" ".join(f"{t:.2f}" for t in per_step["times"])))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vm_scheduler_ab.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out[0]))
        w.writeheader()
        w.writerows(out)


def show_timelines(args):
    for case in _our_graph_cases(args):
        ranks = launch(dict(case, impl="timeline"), args.timeout)
        print(f"{case['name']}: step {statistics.median(max(ts) for ts in zip(*(r['times'] for r in ranks))):.2f} s; "
              f"compute threads' CPU per 100 ms (# > 2/3 core, + > 1/3, . > 1/10):")
        for r in ranks:
            print(f"  rank {r['rank']} |{r['bar']}|")
            print("          busiest threads (share of a core, of it in the kernel): " +
                  ", ".join(f"{t['cpu']:.2f} ({t['system']:.2f})" for t in r["threads"]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "benchmark"))
    p.add_argument("--sizes", nargs="+", default=["tiny"], choices=list(SIZES))
    p.add_argument("--batches", nargs="+", type=int, default=[16], help="micro-batch per data-parallel rank")
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    p.add_argument("--modes", nargs="+", default=["eager", "graph"], choices=["eager", "graph"])
    p.add_argument("--attn", nargs="+", default=["math"], choices=["math", "flash", "auto"])
    p.add_argument("--num-micro", nargs="+", type=int, default=[2, 4],
                   help="micro-batches per step of the 1x1x2 pipeline")
    p.add_argument("--spin-too", action="store_true",
                   help="also run every nn.Graph case of ours with OneFlow's VM scheduler left spinning at full priority")
    p.add_argument("--torch-threads", nargs="+", type=int, default=[2, 1])
    p.add_argument("--no-libai", action="store_true")
    p.add_argument("--libai-norms", nargs="+", default=["naive", "ours"], choices=["naive", "ours"],
                   help="CPU LayerNorm patched into LiBai's ViT")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--planner-baseline", action="store_true", help="also measure a model-less rank's RSS")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps (the first compiles nn.Graph)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="interleaved passes over all cases")
    p.add_argument("--timeout", type=int, default=900, help="seconds per case")
    p.add_argument("--vm-ab", action="store_true",
                   help="instead: OneFlow's VM scheduler spinning vs lowered, alternating blocks of --steps "
                        "steps (--rounds blocks each) in the same processes")
    p.add_argument("--timeline", action="store_true",
                   help="instead of timing: show when each rank's compute threads are busy (nn.Graph cases)")
    args = p.parse_args()
    if args.worker:
        return run_worker(args.worker, args.out)
    if args.timeline:
        return show_timelines(args)
    if args.vm_ab:
        return compare_vm_scheduler(args)

    sys.path.insert(0, ROOT)
    os.makedirs(args.out, exist_ok=True)
    cases = build_cases(args)
    rows, core_gflops = [], None
    csv_path = os.path.join(args.out, "benchmark.csv")
    for rnd in range(args.rounds):
        for case in cases:
            load = os.getloadavg()[0]
            t0 = time.time()
            try:
                ranks = launch(case, args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"[round {rnd}] {case['name']}: FAILED {str(e)[-1500:]}", flush=True)
                rows.append(dict(case=case["name"], impl=case["impl"], round=rnd, load_1min=round(load, 2),
                                 error=str(e).strip().splitlines()[-1][:200]))
                continue
            if case["name"] == "matmul":
                core_gflops = max(core_gflops or 0, ranks[0]["gflops"])
            row = row_of(case, ranks, rnd, load, core_gflops)
            rows.append(row)
            print(f"[round {rnd}] {case['name']}: {row.get('images_per_s', row.get('gflops_per_proc'))} "
                  f"(peak {row['peak_rss_mb']} MB, load {load:.1f}, {time.time() - t0:.0f}s)", flush=True)
            fields = ["case", "impl", "model", "mode", "layout", "nproc", "threads", "micro_batch", "num_micro",
                      "attn", "round", "load_1min", "step_s", "images_per_s", "gflops_per_proc", "mfu",
                      "peak_rss_mb", "error"]
            with open(csv_path, "w", newline="") as f:  # rewritten after every case: a cut run keeps its rows
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
    best = summarize(rows)
    lines = [f"OneFlow 1-thread matmul: {core_gflops:.1f} GFLOP/s per process" if core_gflops else "matmul: n/a"]
    sustained = [best.get(f"matmul/{p}proc-sustained", {}).get("gflops_per_proc") for p in (1, 2)]
    if all(sustained):
        lines.append(f"sustained matmul, 2 processes at once / 1 process: {2 * sustained[1] / sustained[0]:.2f}x "
                     f"(the machine's ceiling for DP=2 scaling)")
    summary = []
    for size in args.sizes:
        for mb in args.batches:
            for name, value in ratios(best, size, mb, args.num_micro, args.attn[0]).items():
                if value is None:
                    continue
                got, target = value
                lines.append(f"{size} mb{mb}  {name}: {got:.2f} (target >= {target}) {'MET' if got >= target else 'NOT met'}")
                summary.append(dict(size=size, micro_batch=mb, ratio=name, value=round(got, 3), target=target,
                                    met=got >= target))
    with open(os.path.join(args.out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["size", "micro_batch", "ratio", "value", "target", "met"])
        w.writeheader()
        w.writerows(summary)
    print("\n".join(lines))
    plot(rows, os.path.join(args.out, "benchmark.png"))


if __name__ == "__main__":
    main()
