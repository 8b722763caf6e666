"""Optimizer parameter groups (layer-wise lr decay, no-weight-decay sets), their lr schedule, LAMB
and whole-model gradient clipping."""

from libai_vit.optim.lamb import Lamb
from libai_vit.optim.lr_scheduler import warmup_cosine_lr
from libai_vit.optim.param_groups import (
    default_param_groups,
    group_parameters,
    layer_decay_param_groups,
)

__all__ = [
    "Lamb",
    "default_param_groups",
    "group_parameters",
    "layer_decay_param_groups",
    "warmup_cosine_lr",
]
