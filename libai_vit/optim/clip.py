"""Gradient clipping by the whole model's norm, as `torch.nn.utils.clip_grad_norm_` computes it.

OneFlow 0.9 clips each parameter group on its own: eagerly `Optimizer.clip_grad()` calls
`clip_grad_norm_` per group, and in nn.Graph every group becomes one `OptimizerConf` whose
`clip_conf` the job pass applies to that group's variables only (measured: two groups of norms 5.1
and 7.4 clipped to 0.1 each moved by 0.1 each, where the whole-model norm 9.0 gives 0.057
and 0.082).

- Eager: `optimizer.clip_grad` is replaced by one `clip_grad_norm_` over every parameter.
- Graph: the groups are compiled as ONE `OptimizerConf` (its clip then sees the whole model), with
  weight decay kept per parameter through the conf's `weight_decay_conf.includes` name patterns.
  That works when the groups differ in weight decay only. Groups with different learning rates
  (layer-wise lr decay) cannot share a conf: OneFlow 0.9 has no per-variable lr in a conf and a
  graph never exposes gradients to Python, so that combination is refused with one line (eager mode
  clips it exactly).
"""

import re

import oneflow as flow

from libai_vit.config import ConfigError, graph_clip_refusal

# what may differ between groups merged into one graph OptimizerConf
_MERGEABLE = {"params", "weight_decay"}


def clip_settings(optimizer):
    """(max_norm, norm_type) the groups ask for, or None; every group must ask for the same."""
    wanted = {
        (g["clip_grad_max_norm"], g["clip_grad_norm_type"]) if g._enable_clip_grad else None
        for g in optimizer.param_groups
    }
    if len(wanted) > 1:
        raise ConfigError(
            f"gradient clipping is set for some parameter groups only, or with different "
            f"values ({sorted(map(str, wanted))}): the whole model is clipped at one norm"
        )
    return wanted.pop()


def clip_whole_model(optimizer, graph):
    """Make `optimizer` clip by the whole model's gradient norm (when its groups ask for it)."""
    settings = clip_settings(optimizer)
    if settings is None:
        return optimizer
    max_norm, norm_type = settings
    if not graph:
        params = [p for g in optimizer.param_groups for p in g.parameters]

        def clip_grad(error_if_nonfinite=False):
            flow.nn.utils.clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite)

        optimizer.clip_grad = clip_grad
        return optimizer
    groups = optimizer.param_groups
    differ = sorted(
        {
            k
            for g in groups[1:]
            for k in g.options
            if k not in _MERGEABLE and g.options[k] != groups[0].options.get(k)
        }
    )
    if differ:
        raise ConfigError(graph_clip_refusal(max_norm, ", ".join(differ)))
    rates = {g["weight_decay"] for g in groups} - {0.0}
    if len(rates) > 1:
        raise ConfigError(
            f"whole-model gradient clipping in graph mode needs one weight decay value besides 0, "
            f"got {sorted(rates)}"
        )
    rate = rates.pop() if rates else 0.0
    generate = optimizer._generate_conf_for_graph

    def one_conf(train_conf, vars_conf):
        confs = generate(train_conf, vars_conf)
        decayed = [
            vars_conf[p].name
            for g in groups
            if g["weight_decay"]
            for p in g.parameters
            if p.requires_grad
        ]
        merged = confs[0]
        for conf in confs[1:]:
            merged.variable_op_names.extend(conf.variable_op_names)
        for _ in confs[1:]:  # the confs generate() appended are the last ones
            del train_conf.optimizer_conf[len(train_conf.optimizer_conf) - 1]
        merged.weight_decay_conf.weight_decay_rate = rate
        # RE2 partial match on variable names: anchor each name
        merged.weight_decay_conf.includes.pattern.extend(f"^{re.escape(n)}$" for n in decayed)
        return [merged]

    optimizer._generate_conf_for_graph = one_conf
    return optimizer
