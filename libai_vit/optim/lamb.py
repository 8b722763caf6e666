"""LAMB as DeiT III trains with it (apex FusedLAMB = timm's `Lamb`), eager mode.

OneFlow 0.9's `flow.optim.LAMB` is another variant (measured on one tensor): its trust ratio is
||w|| / ||adam step|| without the weight-decay term, and it scales every tensor, also those without
weight decay. timm/apex use ||w|| / ||adam step + wd * w|| and leave tensors with weight_decay 0
(biases, norms, position embedding, tokens) unscaled. Its compiled `lamb_update` kernel is the same,
so nn.Graph cannot run this variant: `graph.enabled=False` (libai_vit.config refuses the pair).

timm's built-in gradient clipping (`max_grad_norm`, over the whole model) is
`optim.params.clip_grad_max_norm` here (libai_vit.optim.clip, the same norm).
"""

import math

import oneflow as flow


class Lamb(flow.optim.Optimizer):
    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.01,
        grad_averaging=True,
        trust_clip=False,
        always_adapt=False,
        do_bias_correction=True,
    ):
        options = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            grad_averaging=grad_averaging,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
            do_bias_correction=do_bias_correction,
        )
        super().__init__(params, options)
        self._state["step"] = 0

    @flow.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        step = self._state["step"] + 1
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            beta3 = 1 - beta1 if group["grad_averaging"] else 1.0
            bc1, bc2 = (
                (1 - beta1**step, 1 - beta2**step) if group["do_bias_correction"] else (1.0, 1.0)
            )
            wd = group["weight_decay"]
            for p in group.parameters:
                if p.grad is None:
                    continue
                state = self._state.setdefault(p, {})
                if "exp_avg" not in state:
                    state["exp_avg"] = flow.zeros_like(p)
                    state["exp_avg_sq"] = flow.zeros_like(p)
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                m.mul_(beta1).add_(g * beta3)
                v.mul_(beta2).add_(g * g * (1 - beta2))
                update = (m / bc1) / (v.sqrt() / math.sqrt(bc2) + group["eps"])
                if wd != 0:
                    update = update + p * wd
                if wd != 0 or group["always_adapt"]:
                    w_norm, u_norm = _norm(p), _norm(update)
                    one = flow.ones_like(w_norm)
                    ratio = flow.where(
                        w_norm > 0, flow.where(u_norm > 0, w_norm / u_norm, one), one
                    )
                    if group["trust_clip"]:
                        ratio = flow.clamp(ratio, max=1.0)
                    update = update * ratio
                p.sub_(update * group["lr"])
        self._state["step"] = step
        return loss

    def _generate_conf_for_graph(self, train_conf, vars_conf):
        raise RuntimeError(
            "libai_vit.optim.Lamb runs in eager mode only (graph.enabled=False): OneFlow 0.9's "
            "compiled lamb_update is another LAMB variant (see libai_vit/optim/lamb.py)"
        )


def _norm(x):
    """The 2-norm of a whole tensor, also when it is split over ranks: OneFlow 0.9's
    `linalg.vector_norm` of a split global tensor adds the shards' norms (measured: 14.97 for a
    tensor of norm 11.83 split in two)."""
    return (x * x).sum().sqrt()
