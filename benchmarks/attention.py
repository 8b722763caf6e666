"""Forward+backward time and peak memory of each attention backend against sequence length.

Every (backend, N) case runs in its own process, so its peak memory is its own: minus that of a
baseline child which only imports and builds the inputs. On CPU the peak is resource.getrusage's max
RSS; on CUDA (--device cuda, the default when CUDA exists; every backend then runs there) it is the
device memory the process holds after the run, as nvidia-smi reports it: OneFlow 0.9 has no
allocator statistics, and its caching allocator keeps what it once needed, i.e. the peak.

On a shared machine wall time says little: each case also records its compute CPU seconds, the CPU
time of every thread but OneFlow's VM scheduler, which busy-waits in the kernel while ops run (see
libai_vit/vm_scheduler.py). `--rounds` runs all cases again, interleaved, and keeps each case's best
time (and its largest peak); a case's CPU seconds are the mean of its timed runs, after an
untimed one. Writes results/attention/benchmark.csv (the command in its first line)
and benchmark.png.

    python -m benchmarks.attention                          # ViT-B heads, N = 197 ... 8192
    python -m benchmarks.attention --seq 197 577 --repeats 1 --out /tmp/bench   # quick
"""

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_CPU_S = 1.0


def child(args):
    """One measurement; prints a JSON line. backend 'baseline' stops after building the inputs."""
    import resource

    import oneflow as flow

    import libai_vit  # noqa: F401  (compat fixes)
    from libai_vit.layers import flash
    from libai_vit.layers.attention import attention

    flash.BLOCK_Q, flash.BLOCK_K = args.block_q or flash.BLOCK_Q, args.block_k or flash.BLOCK_K
    shape = (args.batch, args.heads, args.n, args.head_dim)
    gen = flow.Generator()
    gen.manual_seed(0)
    q, k, v, d_out = (flow.randn(*shape, generator=gen).to(args.device) for _ in range(4))
    d_out.numpy()  # eager ops are asynchronous: wait for them
    wall, cpu, compute = [], [], []

    def run():
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        attention(qq, kk, vv, backend=args.backend).backward(d_out)
        for t in (qq, kk, vv):
            t.grad.numpy()

    if args.backend != "baseline":
        run()  # untimed: first calls initialise kernels and fault the allocator's memory in
    # CPU times tick at 100 Hz: short cases run until their timed runs add up to MIN_CPU_S
    while args.backend != "baseline" and (len(wall) < args.repeats or sum(compute) < MIN_CPU_S):
        threads_before = _thread_cpu()
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        compute.append(_compute_seconds(threads_before, _thread_cpu()))
    if args.device == "cuda":
        flow.cuda.synchronize()
        peak_mb = _cuda_memory_mb(os.getpid())
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    runs = max(len(wall), 1)
    print(
        json.dumps(
            {
                "time_s": min(wall, default=0.0),
                "cpu_s": sum(cpu) / runs,
                "compute_s": sum(compute) / runs,
                "peak_mb": peak_mb,
            }
        )
    )


def _thread_cpu():
    from libai_vit.vm_scheduler import thread_cpu_seconds

    return thread_cpu_seconds()


def _compute_seconds(before, after):
    """CPU seconds of the threads but the VM scheduler's: the one with the most system time, if
    that is most of its own (a spinner in sched_yield; computation runs in user space)."""
    used = {t: [a - b for a, b in zip(after[t], before.get(t, (0.0, 0.0)))] for t in after}
    spinner = max(used, key=lambda t: used[t][1], default=None)
    if spinner is not None and used[spinner][1] < 0.6 * sum(used[spinner]):
        spinner = None
    return sum(u + s for t, (u, s) in used.items() if t != spinner)


def _cuda_memory_mb(pid):
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(
        float(mb)
        for p, mb in (line.split(",") for line in out.splitlines() if line.strip())
        if int(p) == pid
    )


def run_case(args, backend, n):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        "--backend",
        backend,
        "--n",
        str(n),
        "--device",
        args.device,
        "--batch",
        str(args.batch),
        "--heads",
        str(args.heads),
        "--head-dim",
        str(args.head_dim),
        "--repeats",
        str(args.repeats),
        "--block-q",
        str(args.block_q),
        "--block-k",
        str(args.block_k),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {args.timeout} s"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"exit {proc.returncode}: {tail}"
    return json.loads(lines[-1]), None


def backends_to_run(requested, device):
    return requested or ["math", "flash"] + (["fused"] if device == "cuda" else [])


def plot(rows, path, device):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for backend in sorted({r["backend"] for r in rows}):
        pts = [r for r in rows if r["backend"] == backend and r["time_s"] != ""]
        ns = [r["seq_len"] for r in pts]
        ax_t.plot(ns, [r["time_s"] for r in pts], "o-", label=backend)
        ax_m.plot(ns, [r["peak_mb"] for r in pts], "o-", label=backend)
    for ax, label in (
        (ax_t, "forward+backward time (s)"),
        (ax_m, "peak memory above baseline (MB)"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"attention backends, {device.upper()} (OneFlow 0.9)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, nargs="+", default=[197, 577, 1024, 2048, 4096, 8192])
    p.add_argument(
        "--backends",
        nargs="+",
        choices=["math", "flash", "fused"],
        default=None,
        help="default: math, flash, and fused when CUDA is present",
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument(
        "--repeats", type=int, default=3, help="timed runs per case, at least (best wall kept)"
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="runs of every case, interleaved (the best is kept)"
    )
    p.add_argument(
        "--timeout", type=float, default=1800, help="seconds per case before giving up on it"
    )
    p.add_argument(
        "--block-q", type=int, default=0, help="flash query block (default: flash.BLOCK_Q)"
    )
    p.add_argument(
        "--block-k", type=int, default=0, help="flash key block (default: flash.BLOCK_K)"
    )
    p.add_argument(
        "--max-math-n", type=int, default=None, help="skip math above this N (memory/time)"
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="where every backend runs (default: cuda when available, else cpu)",
    )
    p.add_argument("--out", default=os.path.join(ROOT, "results", "attention"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        import oneflow as flow

        args.device = "cuda" if flow.cuda.is_available() else "cpu"
    if args.child:
        return child(args)
    if "fused" in (args.backends or []) and args.device != "cuda":
        sys.exit(
            "the fused backend runs OneFlow's CUDA-only kernels: "
            "use --device cuda on a CUDA machine"
        )

    os.makedirs(args.out, exist_ok=True)
    command = "python -m benchmarks.attention " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    rows = measure(args)
    csv_path = os.path.join(args.out, "benchmark.csv")
    memory = "RSS" if args.device == "cpu" else "CUDA memory held"
    with open(csv_path, "w", newline="") as f:
        f.write(
            f"# {command}  (batch {args.batch}, heads {args.heads}, head_dim {args.head_dim}, "
            f"{args.repeats}+ runs x {args.rounds} rounds; time_s best wall, cpu_s process CPU "
            f"time, compute_s CPU time but the VM scheduler's (mean per run, best round); "
            f"peak_mb = largest peak {memory} "
            f"minus an inputs-only child's; device {args.device})\n"
        )
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, os.path.join(args.out, "benchmark.png"), args.device)
    print_ratios(rows)
    print(f"wrote {csv_path} and benchmark.png")


FIELDS = ["backend", "seq_len", "time_s", "cpu_s", "compute_s", "peak_mb", "note"]


def measure(args):
    """Every case `args.rounds` times, round after round; per case the best times, largest peak."""
    backends = backends_to_run(args.backends, args.device)
    rows = {
        (b, n): dict(backend=b, seq_len=n, time_s="", cpu_s="", compute_s="", peak_mb="", note="")
        for n in args.seq
        for b in backends
    }
    base_mb = {}
    for r in range(args.rounds):
        for n in args.seq:
            if n not in base_mb:
                base, err = run_case(args, "baseline", n)
                if err:
                    sys.exit(f"baseline child for N={n} failed: {err}")
                base_mb[n] = base["peak_mb"]
            for backend in backends:
                row = rows[(backend, n)]
                if backend == "math" and args.max_math_n is not None and n > args.max_math_n:
                    row["note"] = "skipped (--max-math-n)"
                    continue
                res, err = run_case(args, backend, n)
                if err:
                    row["note"] = err
                else:
                    for key in ("time_s", "cpu_s", "compute_s"):
                        row[key] = round(min(res[key], row[key] or float("inf")), 4)
                    peak = round(res["peak_mb"] - base_mb[n], 1)
                    row["peak_mb"] = max(peak, row["peak_mb"] or peak)
                print(
                    f"round {r} N={n:5d} {backend:6s} wall {row['time_s']} s  cpu {row['cpu_s']} s"
                    f"  compute {row['compute_s']} s  peak +{row['peak_mb']} MB {row['note']}",
                    flush=True,
                )
    return list(rows.values())


def print_ratios(rows):
    by = {(r["backend"], r["seq_len"]): r for r in rows}
    for n in sorted({r["seq_len"] for r in rows}):
        m, f = by.get(("math", n)), by.get(("flash", n))
        if m and f and m["time_s"] != "" and f["time_s"] != "":
            mem = f["peak_mb"] / m["peak_mb"] if m["peak_mb"] > 0 else float("nan")
            print(
                f"N={n:5d} flash/math: wall {f['time_s'] / m['time_s']:.2f}x  "
                f"compute {f['compute_s'] / m['compute_s']:.2f}x  memory {mem:.3f}x"
            )


if __name__ == "__main__":
    main()
