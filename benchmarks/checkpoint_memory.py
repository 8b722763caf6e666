"""Each rank's memory while saving and loading a training checkpoint: sharded against whole.

    nice python -m benchmarks.checkpoint_memory [--model vit_base_patch16_224] [--layout 1x2x2]

Runs itself in DP x TP x PP processes (libai_vit/launch.py). Each rank builds the timm-named model
on the layout with an eager AdamW that has taken one step (so it holds m and v for every
parameter, as a checkpoint mid-run does) and saves a checkpoint with the training checkpointer;
a second launch builds model and optimizer afresh and loads it, as a resume does. Around the save
and the load a rank resets its peak resident memory (`/proc/self/clear_refs`) and reads VmHWM
afterwards: the rise is that peak over the resident memory just before. Prints, per rank, its
shard of the checkpoint (the bytes of the model and optimizer tensors it holds) and each rise
against it, and checks the loaded state equals the saved one.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ("sharded", "whole")


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure(fn):
    """(MB the resident memory rose to at its peak during fn(), seconds). OneFlow runs eager ops
    asynchronously: what was queued before is finished first, and what fn() queued inside."""
    from oneflow._oneflow_internal.eager import Sync

    Sync()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    fn()
    Sync()
    return (_status_kib("VmHWM") - before) / 1024, time.perf_counter() - start


def rank_main(args):
    import numpy as np
    import oneflow as flow
    from omegaconf import DictConfig

    import libai_vit
    from libai_vit import parallel
    from libai_vit.engine.training_checkpoint import ReliableCheckpointer
    from libai_vit.pretrained.sharded_format import tensors

    dp, tp, pp = map(int, args.layout.split("x"))
    depth = libai_vit.models.zoo.model_kwargs(args.model)["depth"]
    parallel.setup(
        DictConfig(dict(data_parallel_size=dp, tensor_parallel_size=tp, pipeline_parallel_size=pp)),
        depth,
    )

    def build():
        model = libai_vit.create_model(args.model, num_classes=1000)
        optimizer = flow.optim.AdamW(model.parameters(), lr=1e-3)
        return model, optimizer

    def local_bytes(state):
        held = 0
        for _, t in tensors(state):
            if parallel.local_region(t) is not None:
                held += t.to_local().numel() * t.element_size()
        return held

    def fingerprint(model, optimizer):
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        return [float(t.to_local().double().sum()) for _, t in tensors(state) if t.is_global]

    fmt, rank = args.format, flow.env.get_rank()
    model, optimizer = build()
    checkpointer = ReliableCheckpointer(
        model, args.out, sharded=fmt == "sharded", optimizer=optimizer
    )
    fingerprint_file = os.path.join(args.out, f"fingerprint_{rank}.json")
    rows = {"rank": rank}
    if args.phase == "save":
        for p in model.parameters():  # one step gives every parameter its m and v
            (p * p).sum().backward()
        optimizer.step()
        rows["shard_mb"] = (
            local_bytes({"m": model.state_dict(), "o": optimizer.state_dict()}) / 2**20
        )
        rows[f"{fmt}_save_mb"], rows[f"{fmt}_save_s"] = _measure(
            lambda: checkpointer.save("model_0000001")
        )
        with open(fingerprint_file, "w") as f:
            json.dump(fingerprint(model, optimizer), f)
    else:  # a new process: what the load allocates is not served from freed memory
        rows[f"{fmt}_load_mb"], rows[f"{fmt}_load_s"] = _measure(
            lambda: checkpointer.load(os.path.join(args.out, "model_0000001"))
        )
        with open(fingerprint_file) as f:
            saved = json.load(f)
        rows[f"{fmt}_equal"] = bool(np.allclose(fingerprint(model, optimizer), saved, rtol=0))
    print("CHECKPOINT_MEMORY " + json.dumps(rows), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--layout", default="1x2x2", help="DPxTPxPP")
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("save", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--rank-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_run:
        return rank_main(args)
    nproc = 1
    for n in args.layout.split("x"):
        nproc *= int(n)
    rows = {}
    for fmt in FORMATS:
        with tempfile.TemporaryDirectory() as out:
            for phase in ("save", "load"):  # a launch each, so a load starts as a resume does
                cmd = [sys.executable, os.path.join(ROOT, "libai_vit", "launch.py")]
                cmd += ["--nproc_per_node", str(nproc), os.path.abspath(__file__), "--rank-run"]
                cmd += ["--model", args.model, "--layout", args.layout, "--out", out]
                cmd += ["--format", fmt, "--phase", phase]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                found = [
                    json.loads(line.split(" ", 1)[1])
                    for line in proc.stdout.splitlines()
                    if line.startswith("CHECKPOINT_MEMORY ")
                ]
                if proc.returncode or len(found) != nproc:
                    sys.exit(
                        f"the {fmt} {phase} run failed (rc {proc.returncode}):\n"
                        f"{proc.stderr[-3000:]}"
                    )
                for r in found:
                    rows.setdefault(r["rank"], {}).update(r)
    rows = [rows[rank] for rank in sorted(rows)]
    print(
        f"{args.model} at {args.layout}: each rank's peak rise in resident memory (MB) "
        f"while saving and loading model + AdamW state, against its own shard"
    )
    head = "| rank | shard MB |" + "".join(
        f" {f} save MB (x shard) | {f} load MB (x shard) | {f} save s | {f} load s |"
        for f in FORMATS
    )
    print(head)
    print("|" + "---|" * (2 + 4 * len(FORMATS)))
    for r in rows:
        cells = [str(r["rank"]), f"{r['shard_mb']:.0f}"]
        for f in FORMATS:
            cells += [
                f"{r[f + '_save_mb']:.0f} ({r[f + '_save_mb'] / r['shard_mb']:.2f})",
                f"{r[f + '_load_mb']:.0f} ({r[f + '_load_mb'] / r['shard_mb']:.2f})",
                f"{r[f + '_save_s']:.1f}",
                f"{r[f + '_load_s']:.1f}",
            ]
        print("| " + " | ".join(cells) + " |")
    unequal = [f"rank {r['rank']} {f}" for r in rows for f in FORMATS if not r[f + "_equal"]]
    print("loaded state equals the saved one:", "no: " + ", ".join(unequal) if unequal else "yes")


if __name__ == "__main__":
    main()
