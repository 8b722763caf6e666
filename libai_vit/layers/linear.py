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
        x = x.to_global(grad_sbp=x.sbp)  # the gradient returns in the input's SBP
        x = flow.matmul(x, self.weight)
        return x + self.bias if self.bias is not None else x


def row_parallel(linear, x):
    """`linear` (LiBai's row-parallel Linear) applied to `x`, the output in `parallel.residual_sbp`:
    LiBai all-reduces the partial sums; under sequence parallelism they are reduce-scattered
    along the (padded) tokens, Megatron's, so each rank keeps only its tokens."""
    if not parallel.sequence_parallel():
        return linear(x)
    x = parallel.pad_tokens(x.to_global(sbp=x.sbp[:-1] + (flow.sbp.split(x.ndim - 1),)))
    y = flow.matmul(x, linear.weight).to_global(sbp=parallel.residual_sbp())
    return y + linear.bias if linear.bias is not None else y
