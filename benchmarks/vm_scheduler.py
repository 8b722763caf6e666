r"""OneFlow's VM scheduler thread spins through every nn.Graph step: the study behind
libai_vit/vm_scheduler.py (results/benchmark/README.md has what it found).

    nice -n 10 python -m benchmarks.vm_scheduler --vm-ab --layouts 1x1x1 2x1x1 1x1x2 \
        --num-micro 2 4 --steps 2 --rounds 4
                                 # spinning vs lowered, alternating blocks of steps in one process
    nice -n 10 python -m benchmarks.vm_scheduler --timeline --layouts 1x1x2 \
        --num-micro 2 4 --steps 2
                                 # when each rank's compute threads are busy, per 100 ms

Cases are benchmarks/training.py's nn.Graph cases of this project (same flags).
"""

import csv
import os
import statistics
import sys
import threading
import time

from benchmarks import training
from benchmarks.training_workers import (
    build_oneflow_step,
    lower_vm_scheduler,
    run_worker,
    time_steps,
)


def worker_timeline(case):
    """Which threads of this rank are busy when, over timed nn.Graph steps: a bar of 100 ms buckets
    of the compute threads' CPU use (# > 2/3 of a core, + > 1/3, . > 1/10) and each busy thread's
    share."""
    import oneflow as flow

    from libai_vit.vm_scheduler import thread_cpu_seconds

    step = build_oneflow_step(case)
    time_steps(step, case["warmup"], 0)
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.perf_counter(), thread_cpu_seconds()))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times = time_steps(step, 0, case["steps"])
    done.set()
    sampler.join()
    flow.comm.barrier()
    (t0, first), (t1, last) = samples[0], samples[-1]
    used = {t: [a - b for a, b in zip(last[t], first.get(t, (0.0, 0.0)))] for t in last}
    # user time: kernels run in user space
    compute = [t for t in used if used[t][0] > 0.1 * (t1 - t0)]
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
    return {
        "times": times,
        "bar": bar,
        "threads": [dict(tid=t, cpu=round(c, 2), system=round(sy, 2)) for c, sy, t in shares],
    }


def worker_vm_ab(case):
    """OneFlow's VM scheduler thread spinning at full priority vs lowered to nice 19, in one process
    set: blocks of steps alternate between the two, so that the machine's drift falls on both."""
    import oneflow as flow

    from libai_vit import vm_scheduler

    step = build_oneflow_step(dict(case, quiet_vm=False))
    found = lower_vm_scheduler(step)
    flow.comm.barrier()
    step()  # after a barrier a step's time would miss the previous step's backward and update
    times = {"spin": [], "quiet": []}
    for block in range(2 * case["blocks"]):
        mode = ("spin", "quiet")[block % 2]
        if found:
            os.setpriority(os.PRIO_PROCESS, found[0], vm_scheduler.NICE if mode == "quiet" else 0)
        times[mode] += time_steps(step, 0, case["steps"])
    return {"times": times["quiet"], "spin_times": times["spin"], "found": found}


def _our_graph_cases(args):
    args.no_libai = args.no_torch = True
    return [c for c in training.build_cases(args) if c["impl"] == "ours" and c["graph"]]


def compare_vm_scheduler(args):
    """--vm-ab: each nn.Graph case of ours with the VM scheduler spinning vs lowered, in
    alternating blocks of steps."""
    out = []
    for case in _our_graph_cases(args):
        ranks = training.launch(
            dict(case, impl="vm_ab", blocks=args.rounds), args.timeout, script=SCRIPT
        )
        per_step = {
            k: [max(ts) for ts in zip(*(r[k] for r in ranks))] for k in ("times", "spin_times")
        }
        quiet, spin = (statistics.median(per_step[k]) for k in ("times", "spin_times"))
        line = (
            f"{case['name']}: step {spin:.2f} s spinning, {quiet:.2f} s lowered: "
            f"{spin / quiet:.2f}x "
            f"({len(per_step['times'])} steps each, {args.rounds} alternating blocks)"
        )
        print(line, flush=True)
        out.append(
            dict(
                case=case["name"],
                spin_step_s=round(spin, 3),
                quiet_step_s=round(quiet, 3),
                speedup=round(spin / quiet, 3),
                steps=len(per_step["times"]),
                blocks=args.rounds,
                spin_steps=" ".join(f"{t:.2f}" for t in per_step["spin_times"]),
                quiet_steps=" ".join(f"{t:.2f}" for t in per_step["times"]),
            )
        )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vm_scheduler_ab.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out[0]))
        w.writeheader()
        w.writerows(out)


def show_timelines(args):
    for case in _our_graph_cases(args):
        ranks = training.launch(dict(case, impl="timeline"), args.timeout, script=SCRIPT)
        step = statistics.median(max(ts) for ts in zip(*(r["times"] for r in ranks)))
        print(
            f"{case['name']}: step {step:.2f} s; "
            f"compute threads' CPU per 100 ms (# > 2/3 core, + > 1/3, . > 1/10):"
        )
        for r in ranks:
            print(f"  rank {r['rank']} |{r['bar']}|")
            print(
                "          busiest threads (share of a core, of it in the kernel): "
                + ", ".join(f"{t['cpu']:.2f} ({t['system']:.2f})" for t in r["threads"])
            )


SCRIPT = os.path.abspath(__file__)


def main():
    # a launched worker: CASE_JSON OUT_PREFIX
    if len(sys.argv) == 3 and sys.argv[1].startswith("{"):
        return run_worker(
            sys.argv[1], sys.argv[2], {"timeline": worker_timeline, "vm_ab": worker_vm_ab}
        )
    p = training.parser()
    p.description = __doc__
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--vm-ab",
        action="store_true",
        help="the VM scheduler spinning vs lowered, alternating blocks of --steps steps "
        "(--rounds blocks each) in the same processes",
    )
    mode.add_argument(
        "--timeline",
        action="store_true",
        help="when each rank's compute threads are busy (no timing)",
    )
    args = p.parse_args()
    args.modes = ["graph"]
    return show_timelines(args) if args.timeline else compare_vm_scheduler(args)


if __name__ == "__main__":
    main()
