"""Activation recomputation (gradient checkpointing): a module's inner activations are not kept for
the backward pass but recomputed there from its inputs, trading compute for memory. The one place
that knows how, in eager mode and in nn.Graph; the model decides which modules (today: each block,
timm's `set_grad_checkpointing`).

Eager: OneFlow's `flow.utils.checkpoint` (saved-tensor hooks; no re-entrant backward). It does not
replay the random state, so with dropout or drop path the recomputed pass draws new masks
(timm/PyTorch replay it). nn.Graph: the module's graph proxy gets OneFlow's
`activation_checkpointing` (LiBai's GraphBase does the same for its TransformerLayer), set when
the train graph is built; in the traced forward the module is called plainly.
"""

import functools

import oneflow as flow
from oneflow.framework import graph_build_util


def run_recomputed(module, *args, **kwargs):
    """`module(*args, **kwargs)`, its activations recomputed in the backward pass (eager; in
    nn.Graph a plain call: `mark_recomputed` marks the module there)."""
    if graph_build_util.lazy_mode.is_enabled() or not flow.is_grad_enabled():
        return module(*args, **kwargs)
    return flow.utils.checkpoint.checkpoint(functools.partial(module, **kwargs), *args)


def mark_recomputed(proxy):
    """Recompute the activations of the nn.Graph proxy `proxy` (a module's) in backward."""
    from oneflow.nn.graph import GraphModule

    proxy.to(GraphModule).activation_checkpointing = True
