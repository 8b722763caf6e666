"""Parameter groups for fine-tuning: layer-wise learning-rate decay (BEiT/MAE) and no weight decay
on biases, norms and the names the model's `no_weight_decay()` returns (the convention of
timm and LiBai).

LiBai builds the optimizer as `LazyCall(flow.optim.AdamW)(params=LazyCall(f)(...))` and sets
`params.model` first; OneFlow's optimizers and LiBai's schedulers keep each group's own "lr" and
scale it by the schedule, so a group's lr is its layer's scale times the peak lr.
"""

from collections import defaultdict

from libai.optim import get_default_optimizer_params


def layer_id(name, depth):
    """0 for the embeddings (timm's `group_matcher` stem: patch/position embeddings, class and
    register tokens, the pre-norm), i + 1 for block i, depth + 1 for the final norm and the head."""
    if name.startswith(("patch_embed.", "cls_token", "pos_embed", "reg_token", "norm_pre.")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def model_no_weight_decay(model):
    """The names `model.no_weight_decay()` returns (timm's convention), or none."""
    return set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()


def default_param_groups(
    model,
    base_lr=None,
    weight_decay=None,
    weight_decay_norm=None,
    weight_decay_bias=None,
    clip_grad_max_norm=None,
    clip_grad_norm_type=None,
    overrides=None,
):
    """LiBai's `get_default_optimizer_params` (the same arguments), whose `overrides` also give no
    weight decay to the names the model's `no_weight_decay()` returns."""
    no_decay = {name: {"weight_decay": 0.0} for name in sorted(model_no_weight_decay(model))}
    return get_default_optimizer_params(
        model,
        base_lr=base_lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        weight_decay_bias=weight_decay_bias,
        clip_grad_max_norm=clip_grad_max_norm,
        clip_grad_norm_type=clip_grad_norm_type,
        overrides={**no_decay, **(overrides or {})},
    )


def layer_decay_param_groups(
    model,
    lr,
    layer_decay=0.75,
    weight_decay=0.05,
    no_weight_decay_names=None,
    clip_grad_max_norm=None,
    clip_grad_norm_type=2.0,
):
    """Groups of `model`'s trainable parameters with lr = lr * layer_decay ** (depth + 1 - layer)
    and weight_decay 0 for 1-D tensors (biases, norm scales) and `no_weight_decay_names` (None: the
    model's `no_weight_decay()`).

    `clip_grad_max_norm`: clip by the norm of the whole model's gradient (the trainer applies it
    with libai_vit.optim.clip); None: no clipping.
    """
    depth = model.depth
    if no_weight_decay_names is None:
        no_weight_decay_names = model_no_weight_decay(model)
    groups = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name, depth)
        decay = 0.0 if param.ndim <= 1 or name in no_weight_decay_names else weight_decay
        groups[(layer, decay)].append(param)
    result = []
    for (layer, decay), params in sorted(groups.items()):
        group = {
            "params": params,
            "lr": lr * layer_decay ** (depth + 1 - layer),
            "weight_decay": decay,
        }
        if clip_grad_max_norm is not None:
            group.update(
                clip_grad_max_norm=clip_grad_max_norm, clip_grad_norm_type=clip_grad_norm_type
            )
        result.append(group)
    return result
