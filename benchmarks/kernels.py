"""CPU time per call of each op our kernels replace (libai_vit/kernels), with them on and with
OneFlow's own (LIBAI_VIT_KERNELS=0), at ViT-Ti/16's shapes for 16 images, eager, one thread.

    nice -n 10 python -m benchmarks.kernels [--rounds 3] [--batch 16]

Each setting runs in its own process; the settings alternate over rounds (the load of the shared
machine falls on both) and each op keeps its fastest round. CPU seconds of the thread that runs the
kernels (not wall time), so other jobs on the machine hardly move them; backward = forward +
backward minus forward. Prints a markdown table.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("gelu", "gelu (tanh)", "softmax", "layer_norm")


def ops(batch):
    """name -> (forward op, input shape): ViT-Ti's MLP hidden units, attention scores, tokens."""
    import oneflow as flow

    from libai_vit.layers.norm import layer_norm

    w, b = flow.ones(192, requires_grad=True), flow.zeros(192, requires_grad=True)
    fns = (
        flow.nn.functional.gelu,
        lambda t: flow.nn.functional.gelu(t, approximate="tanh"),
        lambda t: flow.softmax(t, dim=-1),
        lambda t: layer_norm(t, w, b, 1e-6),
    )
    shapes = ((batch, 197, 768), (batch, 197, 768), (batch, 3, 197, 197), (batch, 197, 192))
    return dict(zip(NAMES, zip(fns, shapes)))


def compute_seconds(block):
    """CPU seconds of the thread that ran OneFlow's kernels during block() (the busiest one:
    process-wide CPU time would count OneFlow's waiting threads too)."""
    from libai_vit import vm_scheduler

    before = vm_scheduler.thread_cpu_seconds()
    block()
    after = vm_scheduler.thread_cpu_seconds()
    return max(sum(after[t]) - sum(before.get(t, (0.0, 0.0))) for t in after)


def worker(batch, repeats):
    import oneflow as flow

    import libai_vit

    out = {"active": list(libai_vit.kernels.active())}
    for name, (fn, shape) in ops(batch).items():
        x = flow.randn(*shape, requires_grad=True)
        dy = flow.randn(*shape)

        def forward():
            for _ in range(repeats):
                fn(x).numpy()  # eager ops are asynchronous: wait for each result

        def forward_backward():
            for _ in range(repeats):
                fn(x).backward(dy)
                x.grad.numpy()
                x.grad = None

        forward_backward()  # warm-up: kernel selection, allocations
        fwd = compute_seconds(forward) / repeats
        out[name] = (fwd, compute_seconds(forward_backward) / repeats - fwd)
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.batch, args.repeats)
    best = {}
    for _ in range(args.rounds):
        for setting in ("1", "0"):
            env = dict(os.environ, LIBAI_VIT_KERNELS=setting, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
            env.setdefault("GLOG_minloglevel", "2")
            cmd = [sys.executable, __file__, "--worker", "--batch", str(args.batch)]
            cmd += ["--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            for name, times in res.items():
                if name != "active":
                    old = best.get((setting, name), (float("inf"),) * 2)
                    best[(setting, name)] = tuple(min(a, b) for a, b in zip(old, times))
    print(f"| op ({args.batch} images) | OneFlow's fwd ms | ours fwd ms | speed-up | "
          "OneFlow's bwd ms | ours bwd ms | speed-up |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in NAMES:
        (of, ob), (nf, nb) = best[("0", name)], best[("1", name)]
        print(
            f"| {name} | {of * 1e3:.2f} | {nf * 1e3:.2f} | {of / nf:.1f}x | {ob * 1e3:.2f} | "
            f"{nb * 1e3:.2f} | {ob / nb:.1f}x |"
        )


if __name__ == "__main__":
    main()
