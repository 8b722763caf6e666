"""CPU time per call of each op our kernels replace (libai_vit/kernels), with them on and with
OneFlow's own (LIBAI_VIT_KERNELS=0), at ViT-Ti/16's shapes for 16 images, eager, one thread.

    nice -n 10 python tools/benchmark_kernels.py [--rounds 3] [--batch 16]

Each setting runs in its own process; the settings alternate over rounds (the load of the shared
machine falls on both) and each op keeps its fastest round. CPU seconds of the process (not wall
time), so other jobs on the machine hardly move them. Prints a markdown table.
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


def worker(batch, repeats):
    import time

    import oneflow as flow

    import libai_vit

    out = {"active": list(libai_vit.kernels.active())}
    for name, (fn, shape) in ops(batch).items():
        x = flow.randn(*shape, requires_grad=True)
        dy = flow.randn(*shape)
        for _ in range(2):  # warm-up: kernel selection, allocations
            fn(x).backward(dy)
        fwd = bwd = 0.0
        for _ in range(repeats):
            t0 = time.process_time()
            y = fn(x)
            y.numpy()  # eager ops are asynchronous: wait for the result
            t1 = time.process_time()
            y.backward(dy)
            x.grad.numpy()
            t2 = time.process_time()
            fwd, bwd = fwd + t1 - t0, bwd + t2 - t1
            x.grad = None
        out[name] = (fwd / repeats, bwd / repeats)
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10)
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
