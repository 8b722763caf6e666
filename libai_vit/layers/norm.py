"""LayerNorm that runs on CPU too, and timm's RMSNorm.

OneFlow 0.9.0 has no CPU LayerNorm kernel (every `layer_norm*` CPU kernel aborts with "TODO",
measured), so on CPU the same arithmetic is written with primitive ops; on CUDA LiBai's fused kernel
is kept. The per-row statistics are expanded with `broadcast_like` before they meet the rows:
OneFlow's CPU elementwise ops that broadcast along the last dim run ~10x slower than same-shape ones
(measured: this made the LayerNorm 4x faster, forward + backward, and a ViT-Ti train step ~1/4
faster).
"""

import oneflow as flow
from libai.layers import LayerNorm as LiBaiLayerNorm
from oneflow import nn

from libai_vit import parallel
from libai_vit.parallel import device_type


def layer_norm(x, weight, bias, eps):
    """Normalise over the last dim of `x`, then scale and shift (weight/bias may be None)."""
    if device_type(x) == "cuda":
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


NORM_LAYERS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}  # timm's norm_layer choices here


def norm_layer(name, dim, eps, layer_idx):
    """A `name` ('layernorm' or 'rmsnorm') norm over `dim` channels on layer `layer_idx`'s stage."""
    if name not in NORM_LAYERS:
        raise ValueError(f"norm_layer={name!r} is not one of {sorted(NORM_LAYERS)}")
    return NORM_LAYERS[name](dim, eps=eps, layer_idx=layer_idx)
