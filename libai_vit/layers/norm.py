"""LayerNorm that runs on CPU too, and timm's RMSNorm.

OneFlow 0.9.0 has no CPU LayerNorm kernel (every `layer_norm*` CPU kernel aborts with "TODO",
measured): when our kernels for its `layer_norm` ops are loaded (libai_vit.kernels), CPU runs
OneFlow's own op as CUDA does; otherwise the same arithmetic is written with primitive ops. Those
expand the per-row statistics with `broadcast_like` before they meet the rows: OneFlow's CPU
elementwise ops that broadcast along the last dim run ~10x slower than same-shape ones (measured:
this made that LayerNorm 4x faster, forward + backward, and a ViT-Ti train step ~1/4 faster).
"""

import oneflow as flow
from libai.layers import LayerNorm as LiBaiLayerNorm
from oneflow import nn

from libai_vit import kernels, parallel
from libai_vit.parallel import device_type


def _fused_op_runs(x, weight, bias):
    """OneFlow's layer_norm op: on CUDA; on CPU with our kernel, float32, the normalised dim not
    split (the op's SBP rules would gather it) and weight and bias alike (its backward gives
    both grads or neither)."""
    if device_type(x) == "cuda":
        return True
    if "layer_norm" not in kernels.active() or x.dtype != flow.float32:
        return False
    if x.is_global and flow.sbp.split(x.ndim - 1) in x.sbp:
        return False
    if weight is None:
        return bias is None
    return (
        bias is not None
        and weight.requires_grad == bias.requires_grad
        and not (weight.is_global and any(s != flow.sbp.broadcast for s in weight.sbp))
    )


def layer_norm(x, weight, bias, eps):
    """Normalise over the last dim of `x`, then scale and shift (weight/bias may be None)."""
    if _fused_op_runs(x, weight, bias):
        if weight is not None:
            return flow._C.layer_norm_affine(
                x,
                weight,
                bias,
                begin_norm_axis=x.ndim - 1,
                begin_params_axis=x.ndim - 1,
                epsilon=eps,
            )
        return flow._C.layer_norm(
            x, begin_norm_axis=x.ndim - 1, begin_params_axis=x.ndim - 1, epsilon=eps
        )
    return layer_norm_primitives(x, weight, bias, eps)


def layer_norm_primitives(x, weight, bias, eps):
    """The CPU path: the same arithmetic in primitive ops (any device; gpu_check.py compares)."""
    mean = x.mean(dim=-1, keepdim=True)
    centered = x - flow.broadcast_like(mean, x)
    var = (centered * centered).mean(dim=-1, keepdim=True)
    y = centered * flow.broadcast_like(flow.rsqrt(var + eps), x)
    if weight is not None:
        y = y * weight + bias
    return y


class LayerNorm(LiBaiLayerNorm):
    """LiBai's LayerNorm (same parameters, placement and SBP) with a CPU path."""

    def forward(self, x):
        if len(self.normalized_shape) != 1:
            raise ValueError("LayerNorm here normalises over the last dimension only")
        return layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """timm's RmsNorm: x / sqrt(mean(x^2) + eps) * weight over the last dim (no centring, no
    shift); its weight placed and broadcast as LiBai's LayerNorm's."""

    def __init__(self, normalized_shape, eps=1e-6, layer_idx=0):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(
            flow.ones(
                normalized_shape,
                dtype=flow.float32,
                placement=parallel.placement(layer_idx),
                sbp=parallel.broadcast_sbp(),
            )
        )

    def forward(self, x):
        mean_square = (x * x).mean(dim=-1, keepdim=True)
        return x * flow.broadcast_like(flow.rsqrt(mean_square + self.eps), x) * self.weight


def norm_split_width(norm, x):
    """`norm` (a LayerNorm or RMSNorm over the last dim, or an Identity) of `x`, whose last dim
    tensor parallelism may split: then each rank sums its own channels' statistics, one all-reduce
    per statistic (a number per row) adds them, and the rows stay split (left to itself, OneFlow
    moves all of `x` to a batch split and back to meet the broadcast weights)."""
    split = x.is_global and flow.sbp.split(x.ndim - 1) in x.sbp
    if not (split and isinstance(norm, (LayerNorm, RMSNorm))):
        return norm(x)

    def row_mean(t):
        return t.mean(dim=-1, keepdim=True).to_global(sbp=parallel.batch_sbp())

    if isinstance(norm, LayerNorm):
        x = x - row_mean(x)
    y = x * flow.rsqrt(row_mean(x * x) + norm.eps) * parallel.channels_like(norm.weight, x)
    return y + parallel.channels_like(norm.bias, x) if isinstance(norm, LayerNorm) else y


NORM_LAYERS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}  # timm's norm_layer choices here


def norm_layer(name, dim, eps, layer_idx):
    """A `name` ('layernorm' or 'rmsnorm') norm over `dim` channels on layer `layer_idx`'s stage."""
    if name not in NORM_LAYERS:
        raise ValueError(f"norm_layer={name!r} is not one of {sorted(NORM_LAYERS)}")
    return NORM_LAYERS[name](dim, eps=eps, layer_idx=layer_idx)
