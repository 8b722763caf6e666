"""The Linears LiBai lacks: a replicated one that keeps its input's SBP (the classifier head), the
column-parallel input projections from the residual stream (all-gathered along tokens under
sequence parallelism, again in the backward pass) and the row-parallel output into it
(all-reduced, or reduce-scattered along tokens under sequence parallelism).

LiBai's data-parallel Linear (`parallel="data"`) re-splits its input over the batch on both mesh
axes, (S(0), S(0)), so the batch must divide by DP x TP: a micro-batch of 1 at TP=2 fails at graph
build ("cannot be splitted by parallel_num: 2 at axis 0"). This one computes on the residual
stream's own SBP, (S(0) over DP, B over TP): every tensor-parallel rank computes the same logits,
which costs a head's matmul (small) and lets any micro-batch run at any TP.
"""

import oneflow as flow
from libai.layers import Linear

from libai_vit import parallel


class ReplicatedLinear(Linear):
    """LiBai's Linear with `parallel="data"` (same parameters, placement, SBP and names)."""

    def __init__(self, in_features, out_features, bias=True, **kwargs):
        super().__init__(in_features, out_features, bias=bias, parallel="data", **kwargs)

    def forward(self, x):
        # no grad_sbp hint on x: with one, nn.Graph trains other weights at TP2xPP2 (the EMA check
        # of tests/projects/test_recipe_fidelity.py)
        x = flow.matmul(x, self.weight)
        return x + self.bias if self.bias is not None else x


def row_parallel(linear, x):
    """`linear` (LiBai's row-parallel Linear) applied to `x` (see `row_parallel_sum`)."""
    return row_parallel_sum([(x, linear)])


def row_parallel_sum(pairs):
    """The sum of x @ W + b over (x, row-parallel LiBai Linear) pairs, in `parallel.residual_sbp`.
    Each product is a partial sum over the tensor-parallel ranks' rows of W; they are added where
    they are and reduced across the ranks once: all-reduced (as LiBai's Linear does), or under
    sequence parallelism reduce-scattered along the (padded) tokens, Megatron's, so each rank
    keeps only its tokens."""
    total = None
    for x, linear in pairs:
        if linear.weight.sbp[-1] == flow.sbp.split(0):  # rows split over TP: x's columns too
            x = x.to_global(sbp=x.sbp[:-1] + (flow.sbp.split(x.ndim - 1),))
        part = flow.matmul(parallel.pad_tokens(x), linear.weight)
        total = part if total is None else total + part
    total = total.to_global(sbp=parallel.residual_sbp())
    for _, linear in pairs:
        if linear.bias is not None:
            total = total + linear.bias
    return total


def column_parallel(linears, x, num_tokens=None):
    """[linear(x) for linear in `linears`] (column-parallel LiBai Linears) on the residual stream
    `x`'s `num_tokens` real tokens. Under sequence parallelism `x` is split along (padded) tokens
    across the tensor-parallel ranks: it is all-gathered for the products and all-gathered again in
    the backward pass, Megatron's, so the backward keeps each rank's tokens instead of the whole
    sequence (a Linear keeps its input)."""
    n = num_tokens or x.shape[1]
    if not (parallel.sequence_parallel() and x.is_global and x.sbp[-1] != flow.sbp.broadcast):
        x = parallel.gather_tokens(x, n)
        return [linear(x) for linear in linears]
    outs = _GatheredProducts.apply(x, *[linear.weight for linear in linears])
    if not isinstance(outs, (tuple, list)):  # OneFlow returns one output bare
        outs = [outs]
    outs = [y[:, :n] if y.shape[1] != n else y for y in outs]
    return [y if lin.bias is None else y + lin.bias for y, lin in zip(outs, linears)]


class _GatheredProducts(flow.autograd.Function):
    """(x_full @ W_i for each W_i), x_full the token-split `x` all-gathered; keeps only `x`."""

    @staticmethod
    def forward(ctx, x, *weights):
        ctx.save_for_backward(x, *weights)
        with flow.no_grad():  # OneFlow records the ops of `forward` otherwise, keeping x_full
            full = x.to_global(sbp=parallel.batch_sbp())
            return tuple(flow.matmul(full, w) for w in weights)

    @staticmethod
    def backward(ctx, *grads):
        x, *weights = ctx.saved_tensors
        flat = x.to_global(sbp=parallel.batch_sbp()).reshape(-1, x.shape[-1])
        grad_x, grad_weights = None, []
        for g, w in zip(grads, weights):
            # a partial sum over the ranks' output columns
            part = flow.matmul(g, w, transpose_b=True)
            grad_x = part if grad_x is None else grad_x + part
            grad_w = flow.matmul(flat, g.reshape(-1, g.shape[-1]), transpose_a=True)
            grad_weights.append(grad_w.to_global(sbp=w.sbp))
        # reduce-scattered along the tokens
        return (grad_x.to_global(sbp=x.sbp), *grad_weights)
