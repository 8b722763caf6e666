"""Launched by test_zero.py: compile the train graph of a small ViT with ZeRO on a DP x TP x PP
layout (OneFlow 0.9 cannot run it on CPU, see libai_vit.compat) and report, for rank 0, the bytes of
optimizer state it holds and how each state is split."""

import json
import sys

import oneflow as flow
from libai.models.utils import GraphBase
from omegaconf import DictConfig

import libai_vit
from libai_vit import parallel

dp, tp, pp, out = (*map(int, sys.argv[1:4]), sys.argv[4])
stages = [int(s) for s in sys.argv[5].split(",")]
KWARGS = dict(
    img_size=32, patch_size=8, num_classes=10, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0
)

parallel.setup(
    DictConfig(dict(data_parallel_size=dp, tensor_parallel_size=tp, pipeline_parallel_size=pp)),
    KWARGS["depth"],
)
images = flow.randn(8 * dp, 3, 32, 32).to_global(
    placement=parallel.placement(0), sbp=parallel.batch_sbp()
)
labels = flow.zeros(8 * dp, dtype=flow.int64).to_global(
    placement=parallel.placement(KWARGS["depth"] - 1), sbp=parallel.batch_sbp()
)
report, graphs = {}, []
for stage in stages:
    flow.manual_seed(0)
    model = libai_vit.VisionTransformer(**KWARGS)  # a fresh one: ZeRO leaves the parameters split
    opt = flow.optim.AdamW(model.parameters(), lr=1e-3)
    graph = GraphBase(
        model,
        opt,
        flow.optim.lr_scheduler.StepLR(opt, 10),
        grad_acc_steps=2 if pp > 1 else 1,
        zero_optim=stage > 0,
        zero_stage=stage,
    )
    graph._compile(images=images, labels=labels)
    # every rank has built its graph's runtime before any rank goes on, and the graphs live to the
    # end: an 8-rank compile once aborted in OneFlow's runtime_context.cpp counter check
    flow.comm.barrier()
    graphs.append(graph)
    state_bytes, sbps = 0, {}
    for name, t in graph.state_dict().items():
        if isinstance(t, dict) or name.startswith("System-") or not t.is_global or t.numel() < 2:
            continue  # the model's own parameters, the step counter, scalars
        if flow.env.get_rank() in t.placement.ranks.flatten().tolist():
            state_bytes += t.to_local().numel() * t.element_size()
            sbps[name] = [str(s) for s in t.sbp]
    report[stage] = dict(state_bytes=state_bytes, sbp=sbps)
if flow.env.get_rank() == 0:
    with open(out, "w") as f:
        json.dump(report, f)
flow.comm.barrier()
