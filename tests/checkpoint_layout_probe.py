"""Launched by test_checkpoint_layouts.py: the eval logits of a checkpoint on a DP x TP x PP layout.

    checkpoint_layout_probe.py RUN_DIR CHECKPOINT DP TP PP OUT.npz [N_IMAGES]

Builds the model as `tools/train_net.py --eval-only` does (the run's config.yaml,
Trainer.build_model, ReliableCheckpointer.load) on the given layout, whatever layout the checkpoint
was written at, and saves (from rank 0) the whole logits of the first N_IMAGES digits validation
images, before and after the load.
"""

import os
import sys

import numpy as np
import oneflow as flow
from libai.config import LazyConfig, instantiate
from omegaconf import DictConfig

import libai_vit  # noqa: F401  (applies the LiBai 0.1.1 compatibility fixes)
from libai_vit import parallel
from libai_vit.engine.trainer import Trainer
from libai_vit.engine.training_checkpoint import ReliableCheckpointer

run_dir, checkpoint, out = sys.argv[1], sys.argv[2], sys.argv[6]
dp, tp, pp = map(int, sys.argv[3:6])
n_images = int(sys.argv[7]) if len(sys.argv) > 7 else 32

cfg = LazyConfig.load(os.path.join(run_dir, "config.yaml"))
parallel.setup(
    DictConfig(dict(data_parallel_size=dp, tensor_parallel_size=tp, pipeline_parallel_size=pp)),
    int(cfg.model.depth),
)
model = Trainer.build_model(cfg).eval()
dataset = instantiate(cfg.dataloader.test[0].dataset)
images = np.stack([dataset[i].get("images").tensor.numpy() for i in range(n_images)])
# the whole batch on every rank, split over DP as the trainer's batches are
batch = flow.tensor(images, placement=parallel.placement(parallel.FIRST), sbp=parallel.batch_sbp())


def logits():
    with flow.no_grad():
        x = model(batch)["prediction_scores"]
    x = x.to_global(sbp=[flow.sbp.broadcast] * len(x.sbp))
    return (
        x.to_global(placement=flow.env.all_device_placement("cpu"), sbp=flow.sbp.broadcast)
        .to_local()
        .numpy()
    )


# the test checks the load changed them: a silently skipped load would pass otherwise
initial = logits()
ReliableCheckpointer(model).load(checkpoint, checkpointables=[])
loaded = logits()
if flow.env.get_rank() == 0:
    np.savez(out, initial=initial, loaded=loaded)
