"""The processes benchmarks/training.py launches: one function per kind of case, run as

    python benchmarks/training_workers.py CASE_JSON OUT_PREFIX     # writes OUT_PREFIX.<rank>.json

Each reports its step times (and peak RSS); the driver turns them into rows. A train step is
forward + backward + AdamW on synthetic images (no data loading), timed after warm-up.
"""

import json
import os
import resource
import sys
import time

from tools.openblas_coretype import core_in_use


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step, warmup, steps):
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
        return {"gflops": 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9, "times": []}
    times = time_steps(lambda: flow.matmul(a, b).numpy(), 2, case["steps"])
    # the fastest repetition: a roofline is what the kernel can do, not what a loaded machine
    # lets it do
    # (not per CPU second: OneFlow's VM threads spin beside the kernel)
    return {"gflops": 2 * n**3 / min(times) / 1e9, "times": times, "core": core_in_use()}


def worker_numpy_matmul(case):
    """The machine's own fp32 matmul: numpy's OpenBLAS (its own CPU detection) on `threads`
    threads."""
    import numpy as np

    n = case["n"]
    a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    times = time_steps(lambda: a @ b, 2, case["steps"])
    return {"gflops": 2 * n**3 / min(times) / 1e9, "times": times, "core": core_in_use("openblas")}


def worker_baseline(case):
    """What a launched OneFlow rank costs before any model: subtracted from peak RSS by the
    planner test."""
    from omegaconf import DictConfig

    import libai_vit  # noqa: F401
    from libai_vit import parallel

    dp, tp, pp = case["layout"]
    parallel.setup(
        DictConfig(dict(data_parallel_size=dp, tensor_parallel_size=tp, pipeline_parallel_size=pp)),
        case.get("depth", 12),
    )
    return {"times": []}


def _cpu_seconds(exclude=()):
    """CPU seconds (user + system) of this process's threads but `exclude`: on a loaded machine a
    step's CPU time says how fast it would run on a core of its own far better than its wall
    time."""
    if not exclude:
        t = os.times()
        return t.user + t.system
    from libai_vit.vm_scheduler import thread_cpu_seconds

    return sum(u + s for tid, (u, s) in thread_cpu_seconds().items() if tid not in exclude)


def _timed(step, case, exclude=()):
    """{"times": wall seconds per timed step, "cpu_s": CPU seconds per timed step}."""
    time_steps(step, case["warmup"], 0)
    c0 = _cpu_seconds(exclude)
    times = time_steps(step, 0, case["steps"])
    return {"times": times, "cpu_s": (_cpu_seconds(exclude) - c0) / max(case["steps"], 1)}


def worker_oneflow(case):
    """ours / libai: a train step on this rank; every rank reports its own time, CPU time and peak
    memory (the CPU time leaves out OneFlow's VM scheduler thread where it was lowered: it
    spins)."""
    import oneflow as flow

    step = build_oneflow_step(case)
    out = _timed(step, case, exclude=getattr(step, "scheduler_tids", ()))
    flow.comm.barrier()
    return out


def build_oneflow_step(case):
    """A train step (forward, backward, AdamW) of `case` on this rank, as a function that waits
    for it."""
    import oneflow as flow
    from omegaconf import DictConfig

    import libai_vit
    from libai_vit import parallel, vm_scheduler
    from libai_vit.models.zoo import model_kwargs

    kw = model_kwargs(case["model"], **case.get("overrides", {}))
    dp, tp, pp = case["layout"]
    parallel.setup(
        DictConfig(dict(data_parallel_size=dp, tensor_parallel_size=tp, pipeline_parallel_size=pp)),
        kw["depth"],
    )
    flow.manual_seed(0)
    if case["impl"] != "libai":
        model = libai_vit.create_model(
            case["model"], attn_backend=case["attn"], **case.get("overrides", {})
        )
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

        model = VisionTransformer(
            img_size=kw["img_size"],
            patch_size=kw["patch_size"],
            embed_dim=kw["embed_dim"],
            depth=kw["depth"],
            num_heads=kw["num_heads"],
            num_classes=1000,
        )
    model.train()
    optimizer = flow.optim.AdamW(model.parameters(), lr=1e-4)
    micro, acc = case["micro_batch"], case["num_micro"]
    size = kw["img_size"]
    images = flow.randn(
        micro * dp * acc,
        3,
        size,
        size,
        placement=parallel.placement(parallel.FIRST),
        sbp=parallel.batch_sbp(),
    )
    labels = flow.randint(
        0,
        1000,
        (micro * dp * acc,),
        placement=parallel.placement(parallel.LAST),
        sbp=parallel.batch_sbp(),
    )
    everywhere = flow.placement("cpu", list(range(flow.env.get_world_size())))

    def sync(loss):
        # every rank waits for the loss (its stage's work and everything before it is then done)
        loss.to_global(placement=everywhere, sbp=flow.sbp.broadcast).to_local().numpy()

    if case["graph"]:
        from libai.models.utils import GraphBase

        if case["impl"] == "libai":
            # LiBai's own set_pipeline_stage_id (run even at PP=1) also writes `.config.stage_id`
            # on parameters, whose OneFlow 0.9 proxies lack `.config` (compat.py adds it to
            # modules only)
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
        found = lower_vm_scheduler(step)  # as libai_vit's trainer does
        step.scheduler_tids = found[:1] if found else ()
    return step


def lower_vm_scheduler(step):
    """Compile, then lower OneFlow's VM scheduler thread that spins through a step
    (vm_scheduler.py)."""
    from libai_vit import vm_scheduler

    step()
    watch = vm_scheduler.SpinningSchedulerWatch()
    watch.start()
    step()
    return watch.lower()


def worker_torch(case):
    from generators import timm_venv  # noqa: F401  (declares torchvision's ops: before timm is imported)

    # isort: split
    import timm
    import torch

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

    return _timed(step, case)


WORKERS = {
    "matmul": worker_matmul,
    "numpy_matmul": worker_numpy_matmul,
    "baseline": worker_baseline,
    "ours": worker_oneflow,
    "libai": worker_oneflow,
    "torch": worker_torch,
}


def run_worker(case_json, out_prefix, workers=WORKERS):
    case = json.loads(case_json)
    result = workers[case["impl"]](case)
    rank = 0
    if case["impl"] not in ("torch", "numpy_matmul"):
        import oneflow as flow

        rank = flow.env.get_rank()  # the launcher's RANK; a lone process may see RANK=-1 in its env
    result.update(rank=rank, peak_rss_mb=_peak_rss_mb())
    with open(f"{out_prefix}.{rank}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    run_worker(sys.argv[1], sys.argv[2])
