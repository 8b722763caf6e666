"""Multi-head attention pooling with a learned latent query (timm's `AttentionPoolLatent`, SigLIP's
MAP head): the latent attends over the tokens, then a residual MLP; the pooled vector is its
first row.

Tensor-parallel like a block's attention: `q` and `kv` are column-parallel with each head's columns
together (kv as [k_h | v_h] per head), so a rank pools with whole heads; `proj` is row-parallel; the
norm and the MLP are those of a block. Everything sits on the last pipeline stage.
"""

import oneflow as flow
from libai.layers import Linear
from oneflow import nn

from libai_vit import parallel
from libai_vit.layers.attention import attention
from libai_vit.layers.mlp import Mlp, no_init
from libai_vit.layers.norm import LayerNorm


class AttentionPoolLatent(nn.Module):
    def __init__(
        self,
        embed_dim,
        num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_norm=False,
        latent_len=1,
        norm_eps=1e-6,
        act_layer="gelu",
        attn_backend="math",
        layer_idx=parallel.LAST,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"attention pooling: embed_dim={embed_dim} is not divisible by "
                f"num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.attn_backend = attn_backend
        self.latent_len = latent_len
        self.latent = nn.Parameter(
            flow.zeros(
                1,
                latent_len,
                embed_dim,
                placement=parallel.placement(layer_idx),
                sbp=parallel.broadcast_sbp(),
            )
        )
        linear = dict(init_method=no_init, layer_idx=layer_idx)
        self.q = Linear(embed_dim, embed_dim, bias=qkv_bias, parallel="col", **linear)
        self.kv = Linear(embed_dim, 2 * embed_dim, bias=qkv_bias, parallel="col", **linear)
        norm = (
            (lambda: LayerNorm(self.head_dim, eps=norm_eps, layer_idx=layer_idx))
            if qk_norm
            else nn.Identity
        )
        self.q_norm, self.k_norm = norm(), norm()
        self.proj = Linear(embed_dim, embed_dim, parallel="row", **linear)
        self.norm = LayerNorm(embed_dim, eps=norm_eps, layer_idx=layer_idx)
        self.mlp = Mlp(
            embed_dim, int(embed_dim * mlp_ratio), act_layer=act_layer, layer_idx=layer_idx
        )

    def forward(self, x):
        bsz, seq, dim = x.shape
        latent = self.latent.expand(bsz, -1, -1).to_global(sbp=x.sbp)
        q = (
            self.q(latent)
            .view(bsz, self.latent_len, self.num_heads, self.head_dim)
            .permute(0, 2, 1, 3)
        )
        kv = self.kv(x).view(bsz, seq, self.num_heads, 2 * self.head_dim).permute(0, 2, 1, 3)
        k, v = flow.chunk(kv, chunks=2, dim=-1)
        out = attention(self.q_norm(q), self.k_norm(k), v, backend=self.attn_backend)
        out = self.proj(out.transpose(1, 2).reshape(bsz, self.latent_len, dim))
        out = out + self.mlp(self.norm(out))
        return out[:, 0]
