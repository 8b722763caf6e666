"""Activation recomputation (gradient checkpointing): a module's inner activations are not kept for
the backward pass but recomputed there from its inputs, trading compute for memory. The one place
that knows how, in eager mode and in nn.Graph; the model decides which modules (every k-th block,
or only its attention: `set_grad_checkpointing`).

Eager: OneFlow's `flow.utils.checkpoint` (saved-tensor hooks; no re-entrant backward), which does
not replay the random state itself: the recomputation here restores the states of OneFlow's default
generator and of each nn.Dropout's, so drop path and the projections' dropout draw the masks of
the forward pass (measured: equal gradients). Dropout on the attention weights (attn_drop_rate)
still draws new masks in the recomputation (measured: its gradients differ; not found why within
this change). nn.Graph: the module's graph proxy gets OneFlow's
`activation_checkpointing` (LiBai's GraphBase does the same for its TransformerLayer), set when
the train graph is built; in the traced forward the module is called plainly.
"""

import oneflow as flow
from oneflow.framework import graph_build_util


def run_recomputed(module, *args, **kwargs):
    """`module(*args, **kwargs)`, its activations recomputed in the backward pass (eager; in
    nn.Graph a plain call: `mark_recomputed` marks the module there)."""
    if graph_build_util.lazy_mode.is_enabled() or not flow.is_grad_enabled():
        return module(*args, **kwargs)
    generators = _generators(module)
    states, calls = [g.get_state() for g in generators], []

    def replayed(*inputs):
        """The forward; called again (the recomputation), with the random states the first call
        had, so that dropout and drop path draw the same masks; the states then as they were."""
        if not calls:
            calls.append(1)
            return module(*inputs, **kwargs)
        now = [g.get_state() for g in generators]
        for g, state in zip(generators, states):
            g.set_state(state)
        try:
            return module(*inputs, **kwargs)
        finally:
            for g, state in zip(generators, now):
                g.set_state(state)

    return flow.utils.checkpoint.checkpoint(replayed, *args)


def _generators(module):
    """The random generators `module` draws from: OneFlow's default (functional dropout, rand)
    and each nn.Dropout's own."""
    own = [m.generator for m in module.modules() if isinstance(m, flow.nn.Dropout)]
    return [flow.default_generator] + own


def mark_recomputed(proxy):
    """Recompute the activations of the nn.Graph proxy `proxy` (a module's) in backward."""
    from oneflow.nn.graph import GraphModule

    proxy.to(GraphModule).activation_checkpointing = True
