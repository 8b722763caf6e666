"""The blocks' feed-forward layers, tensor-parallel as Megatron/LiBai split them: the input
projections column-parallel (each rank owns a slice of the hidden units), the output one
row-parallel.

- `Mlp`: LiBai's MLP (fc -> activation -> fc) with timm's `act_layer` choice;
- `SwiGLU`: EVA-02's gated MLP, silu(x W_g) * (x W_x), then a LayerNorm over the hidden units
  (timm's `scale_mlp`), then the output projection.
"""

import oneflow as flow
from libai.layers import MLP as LiBaiMLP
from libai.layers import Linear
from libai.utils import distributed as dist
from oneflow import nn

from libai_vit import parallel
from libai_vit.layers.linear import column_parallel, row_parallel
from libai_vit.layers.norm import LayerNorm, norm_split_width


def no_init(tensor):
    """LiBai's Linear init hook, left empty: the model draws every weight layout-independently
    afterwards (see VisionTransformer.init_weights)."""
    return tensor


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x) (timm's 'quick_gelu')."""

    def forward(self, x):
        return x * flow.sigmoid(1.702 * x)


class GELUTanh(nn.Module):
    def forward(self, x):
        return flow.nn.functional.gelu(x, approximate="tanh")


ACTIVATIONS = {  # timm's act_layer names
    "gelu": nn.GELU,
    "quick_gelu": QuickGELU,
    "gelu_tanh": GELUTanh,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
}


def mlp_hidden(embed_dim, mlp_ratio, mlp_layer="mlp", swiglu_align_to=0):
    """(the MLP the blocks build: 'mlp' or 'swiglu', its hidden width) for timm's `mlp_layer`:
    SwiGLUPacked (DINOv2-g) counts gate and value units in `mlp_ratio`, so it has half as many
    hidden units; `swiglu_align_to` rounds a SwiGLU's width up to a multiple of it (DINOv3)."""
    hidden = int(embed_dim * mlp_ratio)
    if mlp_layer == "swiglu_packed":
        mlp_layer, hidden = "swiglu", hidden // 2
    if mlp_layer == "swiglu" and swiglu_align_to:
        hidden += -hidden % swiglu_align_to
    return mlp_layer, hidden


def activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"act_layer={name!r} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Mlp(LiBaiMLP):
    """LiBai's column/row-parallel MLP with the activation `act_layer`; `bias=False`: neither
    layer has a bias (timm's `proj_bias=False`)."""

    def __init__(self, hidden_size, ffn_hidden_size, *, act_layer="gelu", bias=True, **kwargs):
        super().__init__(hidden_size, ffn_hidden_size, init_method=no_init, **kwargs)
        if act_layer != "gelu":  # LiBai's default is exact GELU
            self.activation_func = activation(act_layer)
        if not bias:
            self.dense_h_to_4h.bias = self.dense_4h_to_h.bias = None

    def forward(self, x, num_tokens=None):
        """`num_tokens`: the real tokens of a sequence-parallel `x` (see `column_parallel`)."""
        (hidden,) = column_parallel([self.dense_h_to_4h], x, num_tokens)
        hidden = self.activation_func(hidden)
        return self.dropout(row_parallel(self.dense_4h_to_h, hidden))


class SwiGLU(nn.Module):
    """fc2(norm(silu(fc_g(x)) * fc_x(x))); `norm=False` drops the inner LayerNorm, `bias=False`
    every bias."""

    def __init__(
        self,
        hidden_size,
        ffn_hidden_size,
        *,
        norm=True,
        norm_eps=1e-6,
        bias=True,
        output_dropout_prob=0.0,
        layer_idx=0,
    ):
        super().__init__()
        self.dense_h_to_4h_gate = Linear(
            hidden_size, ffn_hidden_size, parallel="col", init_method=no_init, layer_idx=layer_idx
        )
        self.dense_h_to_4h = Linear(
            hidden_size, ffn_hidden_size, parallel="col", init_method=no_init, layer_idx=layer_idx
        )
        # normalises over the hidden units that tensor parallelism splits (OneFlow reduces the row
        # statistics across ranks); its scale and shift are split like those units, as a column-
        # parallel bias is: broadcast, OneFlow 0.9's nn.Graph aborts at TP=2 ("Check failed:
        # separated_header_mem_ptr() == nullptr" in its CommNet, measured)
        self.norm = (
            LayerNorm(ffn_hidden_size, eps=norm_eps, layer_idx=layer_idx) if norm else nn.Identity()
        )
        if norm:
            split = dict(
                placement=parallel.placement(layer_idx),
                sbp=dist.get_nd_sbp([flow.sbp.broadcast, flow.sbp.split(0)]),
            )
            self.norm.weight = nn.Parameter(flow.ones(ffn_hidden_size, **split))
            self.norm.bias = nn.Parameter(flow.zeros(ffn_hidden_size, **split))
        self.dense_4h_to_h = Linear(
            ffn_hidden_size, hidden_size, parallel="row", init_method=no_init, layer_idx=layer_idx
        )
        self.dropout = nn.Dropout(output_dropout_prob)
        if not bias:
            for linear in (self.dense_h_to_4h_gate, self.dense_h_to_4h, self.dense_4h_to_h):
                linear.bias = None

    def forward(self, x, num_tokens=None):
        gate, value = column_parallel([self.dense_h_to_4h_gate, self.dense_h_to_4h], x, num_tokens)
        hidden = flow.nn.functional.silu(gate) * value
        return self.dropout(row_parallel(self.dense_4h_to_h, norm_split_width(self.norm, hidden)))
