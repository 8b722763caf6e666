"""The pre-norm transformer block of every model here, from LiBai's parallel layers:

    x = x + drop_path(ls1(attn(norm1(x))));  x = x + drop_path(ls2(mlp(norm2(x))))

Parameter names, SBP and placement are LiBai's: `self_attention.query_key_value` is column-parallel
with heads interleaved as [q_h | k_h | v_h] per head, so a tensor-parallel rank owns whole heads,
and `dense` is row-parallel. What the timm families add sits beside what it changes:
- `qk_norm`: a norm over each head's q and k (broadcast weights; a head never spans ranks); with
  `qk_norm_whole_width` over all heads' q (and k) channels together (InternViT-6B);
- `scale_attn_norm`: a LayerNorm over the heads' joined outputs before `dense` (EVA-02 CLIP's
  sub-LN). Tensor parallelism splits the channels of these and of SwiGLU's inner norm by heads /
  units: each rank normalises its own, the row statistics all-reduced (`norm_split_width`);
- `rope`: EVA-02's 2D rotary embedding of q and k, applied on the rank that owns the head;
- `ls1` / `ls2`: LayerScale (CaiT/DeiT III/DINOv2), a per-channel gain on the block's outputs,
  broadcast like the residual stream it scales;
- `mlp`: LiBai's MLP with timm's `act_layer`, or EVA-02's SwiGLU;
- `proj_bias=False`: no bias on `dense` nor on the MLP's layers (AIMv2);
- `norm_layer`: every norm of the block LayerNorm or timm's RMSNorm.
`ParallelScalingBlock` (ViT-22B) runs the same attention and MLP side by side;
`ParallelThingsBlock` (timm's `*_18x2_*`) two attentions side by side, then two MLPs.
"""

from functools import partial

import oneflow as flow
from libai.layers import MultiheadAttention
from oneflow import nn

from libai_vit import parallel
from libai_vit.layers.attention import attention
from libai_vit.layers.linear import column_parallel, row_parallel, row_parallel_sum
from libai_vit.layers.mlp import Mlp, SwiGLU, no_init
from libai_vit.layers.norm import norm_layer as make_norm
from libai_vit.layers.norm import norm_split_width
from libai_vit.layers.recompute import run_recomputed
from libai_vit.layers.rope import apply_rope


class LayerScale(nn.Module):
    """x * gamma, gamma initialised to `init_values` (timm's LayerScale)."""

    def __init__(self, dim, init_values, layer_idx=0):
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(
            flow.full(
                (dim,),
                init_values,
                dtype=flow.float32,
                placement=parallel.placement(layer_idx),
                sbp=parallel.broadcast_sbp(),
            )
        )

    def forward(self, x):
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: a sample's branch dropped whole. The per-sample draw has the batch's SBP
    (B across TP), so under sequence parallelism every token slice of a sample sees one draw
    (LiBai's DropPath draws with the input's SBP, which then splits a size-1 axis)."""

    def __init__(self, drop_prob):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        draw = flow.rand(*shape, dtype=x.dtype, placement=x.placement, sbp=parallel.batch_sbp())
        return x.div(keep) * (draw + keep).floor()


class Attention(MultiheadAttention):
    def __init__(
        self,
        hidden_size,
        num_heads,
        *,
        qkv_bias=True,
        qk_norm=False,
        qk_norm_whole_width=False,
        proj_bias=True,
        scale_norm=False,
        norm_eps=1e-6,
        norm_layer="layernorm",
        attn_backend="math",
        layer_idx=0,
        **kwargs,
    ):
        super().__init__(hidden_size, num_heads, init_method=no_init, layer_idx=layer_idx, **kwargs)
        self.attention_dropout_prob = self.dropout.p
        self.attn_backend = attn_backend
        if not qkv_bias:
            self.query_key_value.bias = None
        if not proj_bias:
            self.dense.bias = None
        self.qk_norm_whole_width = qk_norm and qk_norm_whole_width
        qk_width = hidden_size if self.qk_norm_whole_width else self.head_size
        norm = (
            (lambda: make_norm(norm_layer, qk_width, norm_eps, layer_idx))
            if qk_norm
            else nn.Identity
        )
        self.q_norm, self.k_norm = norm(), norm()
        self.norm = (
            make_norm(norm_layer, hidden_size, norm_eps, layer_idx) if scale_norm else nn.Identity()
        )

    def forward(self, hidden_states, rope=None, return_weights=False, num_tokens=None):
        """`num_tokens`: the real tokens of a sequence-parallel input (see `column_parallel`)."""
        (qkv,) = column_parallel([self.query_key_value], hidden_states, num_tokens)
        out = self.heads(qkv, rope=rope, return_weights=return_weights)
        weights = None
        if return_weights:
            out, weights = out
        out = self.output_dropout(row_parallel(self.dense, out))
        return (out, weights) if return_weights else out

    def heads(self, qkv, rope=None, return_weights=False):
        """The heads' joined outputs (batch, seq, hidden) from the input projection's `qkv`, before
        the output projection `dense`."""
        bsz, seq = qkv.shape[:2]
        qkv = qkv.view(bsz, seq, self.num_heads, 3 * self.head_size)
        if self.qk_norm_whole_width:  # (batch, seq, hidden): the channels of every head
            q, k, v = flow.chunk(qkv, chunks=3, dim=-1)
            q = norm_split_width(self.q_norm, q.flatten(2)).view(q.shape)
            k = norm_split_width(self.k_norm, k.flatten(2)).view(k.shape)
            q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        else:
            q, k, v = flow.chunk(qkv.permute(0, 2, 1, 3), chunks=3, dim=-1)
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attention(
            q,
            k,
            v,
            scale=self.norm_factor,
            dropout_p=self.attention_dropout_prob if self.training else 0.0,
            backend=self.attn_backend,
            return_weights=return_weights,
        )
        weights = None
        if return_weights:
            out, weights = out
        out = norm_split_width(self.norm, out.transpose(1, 2).reshape(bsz, seq, self.hidden_size))
        return (out, weights) if return_weights else out


def make_mlp(mlp_layer, hidden_size, ffn_hidden_size, *, act_layer, scale_mlp_norm, norm_eps, **kw):
    """A block's MLP: LiBai's ('mlp', timm's `act_layer`) or EVA-02's SwiGLU ('swiglu', with its
    inner LayerNorm when `scale_mlp_norm`); `kw`: bias, output_dropout_prob, layer_idx."""
    if mlp_layer == "swiglu":
        return SwiGLU(hidden_size, ffn_hidden_size, norm=scale_mlp_norm, norm_eps=norm_eps, **kw)
    if mlp_layer == "mlp" and not scale_mlp_norm:
        return Mlp(hidden_size, ffn_hidden_size, act_layer=act_layer, **kw)
    raise ValueError(
        f"mlp_layer={mlp_layer!r} (scale_mlp_norm={scale_mlp_norm}): use 'mlp' without "
        f"scale_mlp_norm, or 'swiglu'"
    )


class Block(nn.Module):
    def __init__(
        self,
        hidden_size,
        ffn_hidden_size,
        num_attention_heads,
        *,
        qkv_bias=True,
        qk_norm=False,
        qk_norm_whole_width=False,
        proj_bias=True,
        scale_attn_norm=False,
        init_values=None,
        act_layer="gelu",
        mlp_layer="mlp",
        scale_mlp_norm=False,
        attn_backend="math",
        attention_dropout_prob=0.0,
        output_dropout_prob=0.0,
        drop_path_prob=0.0,
        layernorm_epsilon=1e-6,
        norm_layer="layernorm",
        post_norm=False,
        layer_idx=0,
    ):
        super().__init__()
        self.layer_idx = layer_idx
        # set by the model's set_grad_checkpointing(granularity='attention')
        self.recompute_attention = False
        # timm's ResPostBlock / EvaBlockPostNorm: each norm on its branch's output, not its input
        self.post_norm = post_norm
        self.input_layernorm = make_norm(norm_layer, hidden_size, layernorm_epsilon, layer_idx)
        self.self_attention = Attention(
            hidden_size,
            num_attention_heads,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            qk_norm_whole_width=qk_norm_whole_width,
            proj_bias=proj_bias,
            scale_norm=scale_attn_norm,
            norm_eps=layernorm_epsilon,
            norm_layer=norm_layer,
            attn_backend=attn_backend,
            attention_dropout_prob=attention_dropout_prob,
            output_dropout_prob=output_dropout_prob,
            layer_idx=layer_idx,
        )
        self.ls1 = LayerScale(hidden_size, init_values, layer_idx) if init_values else nn.Identity()
        self.post_attention_layernorm = make_norm(
            norm_layer, hidden_size, layernorm_epsilon, layer_idx
        )
        self.mlp = make_mlp(
            mlp_layer,
            hidden_size,
            ffn_hidden_size,
            act_layer=act_layer,
            scale_mlp_norm=scale_mlp_norm,
            norm_eps=layernorm_epsilon,
            bias=proj_bias,
            output_dropout_prob=output_dropout_prob,
            layer_idx=layer_idx,
        )
        self.ls2 = LayerScale(hidden_size, init_values, layer_idx) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path_prob) if drop_path_prob > 0.0 else nn.Identity()

    def forward(self, x, rope=None, return_weights=False, num_tokens=None):
        """`num_tokens`: the real tokens of a sequence-parallel stream (which carries padding)."""
        x = parallel.to_residual(x, self.layer_idx)
        n = num_tokens or x.shape[1]
        if rope is not None:
            rope = tuple(t.to_global(placement=x.placement) for t in rope)
        norm1, norm2 = self.input_layernorm, self.post_attention_layernorm
        attend = self.self_attention
        if self.recompute_attention:
            attend = partial(run_recomputed, self.self_attention)
        attn = attend(
            x if self.post_norm else norm1(x),
            rope=rope,
            return_weights=return_weights,
            num_tokens=n,
        )
        weights = None
        if return_weights:
            attn, weights = attn
        x = x + self.drop_path(self.ls1(norm1(attn) if self.post_norm else attn))
        mlp = self.mlp(x if self.post_norm else norm2(x), num_tokens=n)
        x = x + self.drop_path(self.ls2(norm2(mlp) if self.post_norm else mlp))
        return (x, weights) if return_weights else x


class ParallelScalingBlock(nn.Module):
    """ViT-22B's parallel block (timm's ParallelScalingBlock): attention and MLP read the same
    normalised input and their outputs are summed,

        y = norm(x);  x = x + drop_path(ls(dense(attn(y)) + fc2(act(fc1(y)))))

    timm fuses q/k/v and fc1 into one input projection (`in_proj`, no bias but fc1's `mlp_bias`);
    here it is two column-parallel projections of y (the same product, split by heads and by MLP
    units), and the two row-parallel output projections are added as partial sums, reduced across
    tensor-parallel ranks once (`layers.linear.row_parallel_sum`). Names are Block's (`ls1` the
    one LayerScale), so the per-head q/k/v layout and the loaders are shared.
    """

    def __init__(
        self,
        hidden_size,
        ffn_hidden_size,
        num_attention_heads,
        *,
        qkv_bias=False,
        qk_norm=False,
        qk_norm_whole_width=False,
        init_values=None,
        act_layer="gelu",
        attn_backend="math",
        attention_dropout_prob=0.0,
        output_dropout_prob=0.0,
        drop_path_prob=0.0,
        layernorm_epsilon=1e-6,
        norm_layer="layernorm",
        layer_idx=0,
    ):
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = make_norm(norm_layer, hidden_size, layernorm_epsilon, layer_idx)
        self.self_attention = Attention(
            hidden_size,
            num_attention_heads,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            qk_norm_whole_width=qk_norm_whole_width,
            norm_eps=layernorm_epsilon,
            norm_layer=norm_layer,
            attn_backend=attn_backend,
            attention_dropout_prob=attention_dropout_prob,
            layer_idx=layer_idx,
        )
        self.mlp = Mlp(
            hidden_size,
            ffn_hidden_size,
            act_layer=act_layer,
            output_dropout_prob=output_dropout_prob,
            layer_idx=layer_idx,
        )
        self.ls1 = LayerScale(hidden_size, init_values, layer_idx) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path_prob) if drop_path_prob > 0.0 else nn.Identity()

    def forward(self, x, rope=None, return_weights=False, num_tokens=None):
        x = parallel.to_residual(x, self.layer_idx)
        if rope is not None:
            rope = tuple(t.to_global(placement=x.placement) for t in rope)
        qkv, hidden = column_parallel(
            [self.self_attention.query_key_value, self.mlp.dense_h_to_4h],
            self.input_layernorm(x),
            num_tokens,
        )
        heads = self.self_attention.heads(qkv, rope=rope, return_weights=return_weights)
        weights = None
        if return_weights:
            heads, weights = heads
        hidden = self.mlp.dropout(self.mlp.activation_func(hidden))
        out = row_parallel_sum(
            [(heads, self.self_attention.dense), (hidden, self.mlp.dense_4h_to_h)]
        )
        x = x + self.drop_path(self.ls1(out))
        return (x, weights) if return_weights else x


class ParallelThingsBlock(nn.Module):
    """timm's ParallelThingsBlock ("Three things everyone should know about Vision Transformers",
    the `*_18x2_*` models): `num_parallel` attentions read the same x and are summed, then as many
    MLPs,

        x = x + sum_i drop_path(ls1_i(attn_i(norm1_i(x))))
        x = x + sum_i drop_path(ls2_i(mlp_i(norm2_i(x))))

    Branch i is a Block's two halves taken apart (`attns.i`: input_layernorm, self_attention, ls1;
    `ffns.i`: post_attention_layernorm, mlp, ls2), built from Block's options, so the per-head
    q/k/v layout, tensor-parallel splits and loaders are Block's. Each branch reduces its own
    row-parallel output: LayerScale and drop path act on it per branch, as timm's.
    """

    def __init__(
        self,
        hidden_size,
        ffn_hidden_size,
        num_attention_heads,
        *,
        num_parallel=2,
        drop_path_prob=0.0,
        layer_idx=0,
        **block_options,
    ):
        super().__init__()
        self.layer_idx = layer_idx
        self.recompute_attention = False  # as Block's
        self.attns, self.ffns = nn.ModuleList(), nn.ModuleList()
        for _ in range(num_parallel):
            block = Block(
                hidden_size,
                ffn_hidden_size,
                num_attention_heads,
                layer_idx=layer_idx,
                **block_options,
            )
            attn, ffn = nn.Module(), nn.Module()
            attn.input_layernorm, attn.self_attention = block.input_layernorm, block.self_attention
            attn.ls1 = block.ls1
            ffn.post_attention_layernorm, ffn.mlp = block.post_attention_layernorm, block.mlp
            ffn.ls2 = block.ls2
            self.attns.append(attn)
            self.ffns.append(ffn)
        self.drop_path = DropPath(drop_path_prob) if drop_path_prob > 0.0 else nn.Identity()

    def forward(self, x, rope=None, return_weights=False, num_tokens=None):
        """With `return_weights`, the branches' attention weights side by side as one block's
        heads: (batch, num_parallel x heads, tokens, tokens)."""
        x = parallel.to_residual(x, self.layer_idx)
        n = num_tokens or x.shape[1]
        if rope is not None:
            rope = tuple(t.to_global(placement=x.placement) for t in rope)
        total, weights = None, []
        for branch in self.attns:
            attend = branch.self_attention
            if self.recompute_attention:
                attend = partial(run_recomputed, branch.self_attention)
            out = attend(
                branch.input_layernorm(x), rope=rope, return_weights=return_weights, num_tokens=n
            )
            if return_weights:
                out, w = out
                weights.append(w)
            out = self.drop_path(branch.ls1(out))
            total = out if total is None else total + out
        x = x + total
        total = None
        for branch in self.ffns:
            out = branch.mlp(branch.post_attention_layernorm(x), num_tokens=n)
            out = self.drop_path(branch.ls2(out))
            total = out if total is None else total + out
        x = x + total
        return (x, flow.cat(weights, dim=1)) if return_weights else x


def attention_modules(block):
    """The Attention modules of a block (or of its nn.Graph proxy): one, or one per branch."""
    if hasattr(block, "attns"):
        return [branch.self_attention for branch in block.attns]
    return [block.self_attention]
