"""Warm-up then cosine decay for parameter groups with different learning rates.

LiBai's WarmupCosineLR hands OneFlow's WarmUpLR the cosine schedule to join at the end of warm-up;
OneFlow then requires every group to have the same lr (it computes one joining factor), which
layer-wise decay breaks. Here the warm-up is a prefix and the cosine runs over the remaining steps
(MAE's schedule): each group goes from warmup_factor x its lr to its lr, then down to alpha x
its lr.
"""

import oneflow as flow


def warmup_cosine_lr(
    optimizer, max_iter, warmup_iter, warmup_factor=0.001, alpha=0.0, warmup_method="linear"
):
    """libai.scheduler.WarmupCosineLR's arguments (the trainer sets max_iter and warmup_iter)."""
    cosine = flow.optim.lr_scheduler.CosineDecayLR(
        optimizer, decay_steps=max(max_iter - warmup_iter, 1), alpha=alpha
    )
    if warmup_iter == 0:
        return cosine
    return flow.optim.lr_scheduler.WarmUpLR(
        cosine,
        warmup_factor=warmup_factor,
        warmup_iters=warmup_iter,
        warmup_method=warmup_method,
        warmup_prefix=True,
    )
