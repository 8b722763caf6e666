"""LiBai's TransformerLayer wired for the ViT: its attention goes through `attention()` (selectable
backend) and it may hand back the attention weights. Parameters, SBP and placement stay LiBai's:
`self_attention.query_key_value` is column-parallel with heads interleaved as [q_h | k_h | v_h] per
head, so a tensor-parallel rank owns whole heads; `dense` is row-parallel.
"""
import oneflow as flow
from libai.layers import MultiheadAttention, TransformerLayer

from libai_vit.layers.attention import attention


def _no_init(tensor):
    """Weights are drawn later by the model, layout-independently (see VisionTransformer.init_weights)."""
    return tensor


class Attention(MultiheadAttention):
    def __init__(self, hidden_size, num_heads, *, qkv_bias=True, attn_backend="math", layer_idx=0, **kwargs):
        super().__init__(hidden_size, num_heads, layer_idx=layer_idx, **kwargs)
        self.attention_dropout_prob = self.dropout.p
        self.attn_backend = attn_backend
        if not qkv_bias:
            self.query_key_value.bias = None

    def forward(self, hidden_states, attention_mask=None, return_weights=False, **unused):
        bsz, seq = hidden_states.shape[:2]
        qkv = self.query_key_value(hidden_states)
        qkv = qkv.view(bsz, seq, self.num_heads, 3 * self.head_size).permute(0, 2, 1, 3)
        q, k, v = flow.chunk(qkv, chunks=3, dim=-1)
        out = attention(q, k, v, mask=attention_mask, scale=self.norm_factor,
                        dropout_p=self.attention_dropout_prob if self.training else 0.0,
                        backend=self.attn_backend, return_weights=return_weights)
        weights = None
        if return_weights:
            out, weights = out
        out = out.transpose(1, 2).reshape(bsz, seq, self.hidden_size)
        out = self.output_dropout(self.dense(out))
        return (out, weights) if return_weights else out


class Block(TransformerLayer):
    """Pre-norm block: x + drop_path(attn(norm1(x))); x + drop_path(mlp(norm2(x)))."""

    def __init__(self, hidden_size, ffn_hidden_size, num_attention_heads, *, qkv_bias=True,
                 attn_backend="math", layer_idx=0, **kwargs):
        self._qkv_bias = qkv_bias
        self._attn_backend = attn_backend
        super().__init__(hidden_size, ffn_hidden_size, num_attention_heads, init_method=_no_init,
                         layer_idx=layer_idx, **kwargs)

    def build_attention(self, is_cross_attention=False):
        return Attention(
            self.hidden_size, self.num_attention_heads, qkv_bias=self._qkv_bias,
            attn_backend=self._attn_backend, attention_dropout_prob=self.attention_dropout_prob,
            output_dropout_prob=self.output_dropout_prob, init_method=_no_init, layer_idx=self.layer_idx)

    def forward(self, x, return_weights=False):
        x = x.to_global(placement=self.input_layernorm.weight.placement)
        attn = self.self_attention(self.input_layernorm(x), return_weights=return_weights)
        weights = None
        if return_weights:
            attn, weights = attn
        x = x + self.drop_path(attn)
        x = x + self.drop_path(self.mlp(self.post_attention_layernorm(x)))
        return (x, weights) if return_weights else x
