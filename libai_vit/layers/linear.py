"""A Linear whose weight is replicated and whose input keeps its SBP: the classifier head.

LiBai's data-parallel Linear (`parallel="data"`) re-splits its input over the batch on both mesh
axes, (S(0), S(0)), so the batch must divide by DP x TP: a micro-batch of 1 at TP=2 fails at graph
build ("cannot be splitted by parallel_num: 2 at axis 0"). This one computes on the residual
stream's own SBP, (S(0) over DP, B over TP): every tensor-parallel rank computes the same logits,
which costs a head's matmul (small) and lets any micro-batch run at any TP.
"""

import oneflow as flow
from libai.layers import Linear


class ReplicatedLinear(Linear):
    """LiBai's Linear with `parallel="data"` (same parameters, placement, SBP and names)."""

    def __init__(self, in_features, out_features, bias=True, **kwargs):
        super().__init__(in_features, out_features, bias=bias, parallel="data", **kwargs)

    def forward(self, x):
        x = x.to_global(grad_sbp=x.sbp)  # the gradient returns in the input's SBP
        x = flow.matmul(x, self.weight)
        return x + self.bias if self.bias is not None else x
