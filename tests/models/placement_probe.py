"""Launched by test_placement.py: build a small ViT on a DP x TP x PP layout and dump, per
parameter, its placement ranks, SBP and full value (gathered), plus the stage ids set
in nn.Graph."""

import json
import sys

import numpy as np
import oneflow as flow
from libai.models.utils import GraphBase
from omegaconf import DictConfig
from oneflow.nn.graph import GraphModule

import libai_vit
from libai_vit import parallel

dp, tp, pp, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
split = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
KWARGS = dict(
    img_size=16, patch_size=4, num_classes=6, embed_dim=32, depth=4, num_heads=4, mlp_ratio=2.0
)

parallel.setup(
    DictConfig(
        dict(
            data_parallel_size=dp,
            tensor_parallel_size=tp,
            pipeline_parallel_size=pp,
            pipeline_stage_layers=split,
        )
    ),
    KWARGS["depth"],
)
model = libai_vit.VisionTransformer(**KWARGS)
report = {}
for name, p in model.named_parameters():
    everywhere = flow.env.all_device_placement("cpu")
    full = p.to_global(sbp=[flow.sbp.broadcast] * len(p.sbp)).to_global(
        placement=everywhere, sbp=flow.sbp.broadcast
    )
    full = full.to_local().numpy()
    report[name] = dict(
        ranks=np.asarray(p.placement.ranks).tolist(),
        sbp=[str(s) for s in p.sbp],
        value=full.ravel()[:64].tolist(),
        sum=float(full.sum()),
        shape=list(full.shape),
    )
opt = flow.optim.SGD(model.parameters(), lr=0.1)
graph = GraphBase(
    model, opt, flow.optim.lr_scheduler.StepLR(opt, 10), grad_acc_steps=2 if pp > 1 else 1
)
stages = {}
for name in ("patch_embed", "pos_drop", "norm", "head", "loss_func"):
    stages[name] = getattr(graph.model, name).to(GraphModule).stage_id
for i, block in enumerate(graph.model.blocks):
    stages[f"blocks.{i}"] = block.to(GraphModule).stage_id
if flow.env.get_rank() == 0:
    with open(out, "w") as f:
        json.dump(dict(params=report, stages=stages), f)
