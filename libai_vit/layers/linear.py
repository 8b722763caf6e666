"""The Linears LiBai lacks: a replicated one that keeps its input's SBP (the classifier head), and
the row-parallel output into the residual stream (all-reduced, or reduce-scattered along tokens
under sequence parallelism).

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
