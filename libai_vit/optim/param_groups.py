"""Parameter groups for fine-tuning: layer-wise learning-rate decay (BEiT/MAE) and no weight decay
on biases, norms and the names the model's `no_weight_decay()` returns (the convention of
timm and LiBai).

LiBai builds the optimizer as `LazyCall(flow.optim.AdamW)(params=LazyCall(f)(...))` and sets
`params.model` first; OneFlow's optimizers and LiBai's schedulers keep each group's own "lr" and
scale it by the schedule, so a group's lr is its layer's scale times the peak lr.
"""

import re
from collections import defaultdict

from libai.optim import get_default_optimizer_params

MATCH_PREV = 99999  # timm's MATCH_PREV_GROUP: the suffix that joins the previous layer


def group_parameters(model, group_matcher):
    """{parameter name: layer id} from a timm `group_matcher` dict, as timm's
    `group_parameters(..., reverse=True)`: each spec (a regex, or a list of (regex, suffix)) gives
    a name the ordinal (spec index, the regex's numeric groups, suffix); a name no spec matches is
    last; the sorted distinct ordinals are numbered 0, 1, ..., an ordinal ending in MATCH_PREV
    joining the layer before it."""
    specs = []
    for ordinal, spec in enumerate(group_matcher.values()):
        if spec is None:
            continue
        for regex, suffix in spec if isinstance(spec, (list, tuple)) else [(spec, None)]:
            specs.append((re.compile(regex), ordinal, suffix))

    def grouping(name):
        for regex, ordinal, suffix in specs:
            match = regex.match(name)
            if match:
                parts = (ordinal, *match.groups(), *(suffix or ()))
                return tuple(float(p) for p in parts if p is not None)
        return (float("inf"),)

    keys = {name: grouping(name) for name, _ in model.named_parameters()}
    layer_of_key, layer = {}, -1
    for key in sorted(set(keys.values())):
        if layer < 0 or key[-1] != MATCH_PREV:
            layer += 1
        layer_of_key[key] = layer
    return {name: layer_of_key[key] for name, key in keys.items()}


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
    """Groups of `model`'s trainable parameters with lr = lr * layer_decay ** (top - layer), the
    layers those of the model's `group_matcher()` (timm's `param_groups_layer_decay`; for this ViT:
    0 the embeddings, i + 1 block i, top = depth + 1 the final norm, pooling and head), and
    weight_decay 0 for 1-D tensors (biases, norm scales) and `no_weight_decay_names` (None: the
    model's `no_weight_decay()`).

    `clip_grad_max_norm`: clip by the norm of the whole model's gradient (the trainer applies it
    with libai_vit.optim.clip); None: no clipping.
    """
    layers = group_parameters(model, model.group_matcher(coarse=False))
    top = max(layers.values())
    if no_weight_decay_names is None:
        no_weight_decay_names = model_no_weight_decay(model)
    groups = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layers[name]
        decay = 0.0 if param.ndim <= 1 or name in no_weight_decay_names else weight_decay
        groups[(layer, decay)].append(param)
    result = []
    for (layer, decay), params in sorted(groups.items()):
        group = {
            "params": params,
            "lr": lr * layer_decay ** (top - layer),
            "weight_decay": decay,
        }
        if clip_grad_max_norm is not None:
            group.update(
                clip_grad_max_norm=clip_grad_max_norm, clip_grad_norm_type=clip_grad_norm_type
            )
        result.append(group)
    return result
