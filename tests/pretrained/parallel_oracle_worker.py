"""One process of a TP=2 or PP=2 run (launched by test_parallel_oracle.py): load every fixture that
fits the layout and compare with timm's outputs (logits, then forward_intermediates); at PP=2 also
train a tiny graph with and without grad checkpointing. argv: TP PP. Exits non-zero on a
mismatch."""

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
# the intermediates are replicated across TP ranks (the residual stream's SBP: nothing to gather),
# and a new head sits where the constructed one does (the last stage)
model = build("dinov2_reg4.safetensors")
with flow.no_grad():
    y = model.forward_intermediates(flow.tensor(ORACLE["input@28"]), intermediates_only=True)[0]
head = model.head
model.reset_classifier(7)
print(f"TP={tp} PP={pp} intermediates sbp {tuple(y.sbp)} on {y.placement}", flush=True)
if (model.head.weight.placement, model.head.weight.sbp) != (head.weight.placement, head.weight.sbp):
    failed.append("reset_classifier placement")
if y.placement != parallel.placement(parallel.LAST) or y.sbp[-1] != flow.sbp.broadcast:
    failed.append("intermediates placement")


live_graphs = []


def train_losses(grad_checkpointing, steps=2):
    """Per-step losses of a tiny ViT in a LiBai train graph at this layout."""
    from libai.models.utils import GraphBase

    from libai_vit import create_model

    small = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3)
    model = create_model("vit_small_patch14_reg4_dinov2", init_seed=1, **small).train()
    model.set_grad_checkpointing(grad_checkpointing)
    graph = GraphBase(model, flow.optim.SGD(model.parameters(), lr=0.1), None, is_train=True)
    rng = np.random.default_rng(0)
    x = parallel.to_stage(flow.tensor(rng.normal(size=(4, 3, 16, 16)), dtype=flow.float32), 0)
    y = parallel.to_stage(flow.tensor([0, 1, 2, 0]), parallel.LAST)
    losses = [graph(images=x, labels=y)["losses"] for _ in range(steps)]
    # OneFlow 0.9 aborts (comm_network.cpp: waiting_list.empty()) if a pipeline graph is freed while
    # another rank still runs its last backward: each rank waits for its own updated weights, then
    # all meet, and the graph lives until the process exits
    for p in model.parameters():
        p.to_local().numpy()
    flow.comm.barrier()
    live_graphs.append(graph)
    if not on_last_stage:  # the loss lives on the last stage's ranks
        return None
    return [
        float(loss.to_global(sbp=[flow.sbp.broadcast] * len(loss.sbp)).to_local())
        for loss in losses
    ]


# (PP=2 only: the graph compiles are the slow part of this launch)
plain, recomputed = (train_losses(False), train_losses(True)) if pp > 1 else (None, None)
if on_last_stage and pp > 1:
    print(f"TP={tp} PP={pp} grad checkpointing losses {recomputed} plain {plain}", flush=True)
    if recomputed != plain:
        failed.append("grad checkpointing")
sys.exit(1 if failed or not checked else 0)
