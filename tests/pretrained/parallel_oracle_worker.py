"""One process of a TP=2 or PP=2 run (launched by test_parallel_oracle.py): load every fixture that
fits the layout and compare with timm's outputs (logits, then forward_intermediates). argv: TP PP.
Exits non-zero on a mismatch."""

import sys

import intermediates_oracle
import numpy as np
import oneflow as flow
from omegaconf import DictConfig
from timm_oracle import CASES, MANIFEST, ORACLE, TOL, build, fixture, output

from libai_vit import parallel
from libai_vit.pretrained import load_pretrained

tp, pp = int(sys.argv[1]), int(sys.argv[2])
depths = {MANIFEST["cases"][c]["kwargs"]["depth"] for c in CASES}
assert len(depths) == 1, "one layout set-up serves all cases only if they share a depth"
parallel.setup(
    DictConfig(dict(data_parallel_size=1, tensor_parallel_size=tp, pipeline_parallel_size=pp)),
    depths.pop(),
)
checked, failed = 0, []
for case in CASES:
    c = MANIFEST["cases"][case]
    if c["kwargs"]["num_heads"] % tp:
        continue
    model = build(case)
    load_pretrained(model, fixture(c["file"]))
    ours = output(model, ORACLE[c["input"]], c["output"])
    checked += 1
    if ours.size:  # only the last stage's ranks hold the output
        diff = float(np.abs(ours - ORACLE[f"{case}/output"]).max())
        print(f"TP={tp} PP={pp} {case}: max diff {diff:.3g}", flush=True)
        if not diff < TOL:
            failed.append(case)
print(f"checked {checked} cases", flush=True)
on_last_stage = flow.env.get_rank() in np.asarray(parallel.placement(parallel.LAST).ranks)
checked_intermediates = 0
for case in intermediates_oracle.CASES:
    if MANIFEST["cases"][case]["kwargs"]["num_heads"] % tp:
        continue
    diff, wrong = intermediates_oracle.max_diff(case)  # every rank runs the model
    checked_intermediates += 1
    if on_last_stage:  # only the last stage's ranks hold the outputs
        print(f"TP={tp} PP={pp} intermediates {case}: max diff {diff:.3g} {wrong}", flush=True)
        if wrong or not diff < TOL:
            failed.append(f"intermediates {case}")
print(f"checked {checked_intermediates} intermediates cases", flush=True)
sys.exit(1 if failed or not checked else 0)
