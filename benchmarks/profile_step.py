r"""Where a train step's CPU time goes: compute CPU seconds per step, and (with --perf) the share of
each kernel family, from `perf record` on this process (perf must be installed; needs no rebuild).

    nice -n 10 python -m benchmarks.profile_step [--model vit_tiny_patch16_224] [--batch 16] \
        [--eager] [--perf]

CPU seconds of the compute threads (OneFlow's spinning VM scheduler thread left out) are far
steadier on a shared machine than wall time: use them to compare two versions of an op, one
after the other.
"""

import argparse
import collections
import os
import re
import resource
import subprocess
import tempfile
import threading
import time

# kernel family <- a pattern of the symbols perf reports for it (the first match wins)
FAMILIES = [
    ("matmul (OpenBLAS)", r"sgemm|gemm_|dnnl.*gemm"),
    ("erf (GELU forward and backward)", r"erf"),
    ("exp (GELU backward, softmax)", r"exp"),
    ("GELU backward loop", r"BinaryOp\)26"),
    ("broadcast copies (LayerNorm broadcast_like, expand)", r"XpuBroadcastNdarray|Broadcast"),
    ("row reductions (LayerNorm, bias grads)", r"Reduce"),
    ("AdamW update", r"Adam"),
    ("sum of gradients (oneDNN)", r"simple_sum"),
    ("other elementwise", r"elementwise|Elementwise|ep::primitive"),
    ("memory copies", r"memmove|memcpy|memset"),
    ("kernel / scheduler", r"^\[k\]|sched|futex"),
]


def family(symbol):
    return next((name for name, pat in FAMILIES if re.search(pat, symbol)), "other")


def perf_shares(pid, seconds):
    """{family: share of samples} of process `pid` over `seconds`."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        subprocess.run(
            ["perf", "record", "-q", "-o", data, "-p", str(pid), "--", "sleep", str(seconds)],
            check=True,
            capture_output=True,
        )
        report = subprocess.run(
            [
                "perf",
                "report",
                "-i",
                data,
                "--no-children",
                "--sort",
                "symbol",
                "--stdio",
                "-q",
                "--percent-limit",
                "0.05",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    shares, symbols = collections.Counter(), collections.Counter()
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\[.\])\s+(.*)", line)
        if m:
            share, symbol = float(m.group(1)) / 100, f"{m.group(2)} {m.group(3).strip()}"
            shares[family(symbol)] += share
            symbols[symbol[:110]] += share
    return shares, symbols


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--attn", default="math")
    p.add_argument("--eager", action="store_true", help="eager instead of nn.Graph")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument(
        "--perf", action="store_true", help="also sample the kernels with perf over the timed steps"
    )
    args = p.parse_args()

    from tools.openblas_coretype import choose, core_in_use, users_coretype

    if not users_coretype() and choose():
        os.environ["OPENBLAS_CORETYPE"] = choose()  # before oneflow loads
    from benchmarks.training_workers import build_oneflow_step
    from libai_vit import vm_scheduler

    case = dict(
        impl="ours",
        model=args.model,
        graph=not args.eager,
        layout=[1, 1, 1],
        micro_batch=args.batch,
        num_micro=1,
        attn=args.attn,
        quiet_vm=False,
    )
    step = build_oneflow_step(case)
    step()
    t = time.perf_counter()
    step()
    walls0 = time.perf_counter() - t
    scheduler = None
    if not args.eager:
        watch = vm_scheduler.SpinningSchedulerWatch()
        watch.start()
        step()
        found = watch.lower()
        scheduler = found[0] if found else None

    def compute_cpu():
        return sum(
            u + s for t, (u, s) in vm_scheduler.thread_cpu_seconds().items() if t != scheduler
        )

    print(f"OpenBLAS core {core_in_use()}; load {os.getloadavg()[0]:.1f}", flush=True)
    c0, result = compute_cpu(), {}
    if args.perf:  # samples the first ~2/3 of the timed steps
        sampler = threading.Thread(
            target=lambda: result.update(
                zip(
                    ("shares", "symbols"),
                    perf_shares(os.getpid(), max(2, int(0.6 * args.steps * walls0))),
                )
            )
        )
        sampler.start()
    walls = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        walls.append(time.perf_counter() - t)
    cpu = (compute_cpu() - c0) / args.steps
    walls.sort()
    print(
        f"{args.model} batch {args.batch} {'eager' if args.eager else 'nn.Graph'}: compute CPU "
        f"{cpu:.3f} s per step, wall median {walls[len(walls) // 2]:.3f} s "
        f"({args.batch / walls[len(walls) // 2]:.2f} img/s), peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB"
    )
    if args.perf:
        sampler.join()
        shares = result["shares"]
        # mostly the lowered VM scheduler's sched_yield loop
        idle = shares.pop("kernel / scheduler", 0.0)
        print(
            f"share of the compute samples by kernel family ({idle * 100:.0f}% of all samples were "
            f"in the kernel/scheduler, left out):"
        )
        for name, share in shares.most_common():
            print(f"  {share / (1 - idle) * 100:5.1f}%  {name}")
        print("top symbols:")
        for name, share in result["symbols"].most_common(12):
            print(f"  {share * 100:5.1f}%  {name}")


if __name__ == "__main__":
    main()
