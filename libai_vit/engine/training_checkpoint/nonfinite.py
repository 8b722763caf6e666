"""The NaN/Inf scan run before a save, so that no checkpoint holds a diverged model."""

import math

import oneflow as flow
from libai.utils import distributed as dist

from libai_vit.engine.broadcast import broadcast_from_rank0


def nonfinite_entries(model):
    """Names of model tensors holding NaN/Inf, on every rank (one small collective per tensor)."""
    sums = {}
    for name, v in model.state_dict().items():
        s = v.sum().to(flow.float64)
        sums[name] = dist.tton(
            s, local_only=False, ranks=[0] if s.placement.ranks.ndim == 1 else [[0]]
        )
    bad = (
        [n for n, s in sums.items() if not math.isfinite(float(s))]
        if dist.is_main_process()
        else None
    )
    return broadcast_from_rank0(bad)
