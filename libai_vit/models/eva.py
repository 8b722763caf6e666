"""EVA-02 (Fang et al. 2023; timm's `eva.py`): a ViT with 2D rotary position embedding in every
attention, a SwiGLU MLP with a LayerNorm inside (`scale_mlp`), global average pooling and a small
head init. It is `VisionTransformer` with EVA's option names: it trains alike at every layout.
timm builds DINOv3 (Simeoni et al. 2025) with this class too: DINOv3's RoPE (`rope_type='dinov3'`),
storage tokens as registers, LayerScale, no position embedding, a SwiGLU for S+/H+/7B.

timm keeps EVA's q/k/v as three projections (`qkv_fused=False`) with no k bias; here they are one
column-parallel projection whose k bias loads as zeros and stays zero: softmax over keys ignores a
bias that adds the same q.b_k to every key's score, so its gradient is exactly zero.
"""

from libai_vit.models.vision_transformer import VisionTransformer


class Eva(VisionTransformer):
    """timm's `Eva` arguments, mapped onto VisionTransformer's (every other keyword passes through):

    qkv_fused: accepted and ignored (fused or not, the checkpoint loads into one q/k/v projection).
    swiglu_mlp: a SwiGLU MLP (mlp_layer='swiglu') instead of the GELU MLP.
    scale_mlp: a LayerNorm inside the MLP (scale_mlp_norm).
    scale_attn_inner: a LayerNorm over the attention's output before its projection
        (scale_attn_norm).
    num_reg_tokens: register tokens (reg_tokens).
    use_pre_transformer_norm: a LayerNorm after the embeddings (pre_norm).
    use_fc_norm: the final norm after pooling (fc_norm); None: after for 'avg' (DINOv3: False).
    use_post_transformer_norm: the final norm after the blocks; None: unless use_fc_norm (PE's
        spatial and language towers: False, no final norm at all).
    attn_type: 'eva' or 'rope' (timm's AttentionRope, Perception Encoder): the same attention here,
        RoPE on the patch tokens, one q/k/v projection with its bias.
    use_post_norm: post-norm blocks (block_fn='res_post', EVA-02-E); init_values is then ignored,
        as timm's EvaBlockPostNorm ignores it.
    global_pool, head_init_scale: as VisionTransformer's, with EVA's defaults ('avg', 0.001); the
        'map' pool attends over every token (pool_include_prefix=True, as timm's Eva).
    rope_type, rope_temperature, rope_rotate_half, swiglu_align_to: VisionTransformer's (timm's
        names; DINOv3: 'dinov3', 100, True).
    """

    def __init__(
        self,
        global_pool="avg",
        qkv_fused=True,
        swiglu_mlp=False,
        scale_mlp=False,
        scale_attn_inner=False,
        num_reg_tokens=0,
        use_pre_transformer_norm=False,
        use_fc_norm=None,
        use_post_transformer_norm=None,
        use_post_norm=False,
        attn_type="eva",
        head_init_scale=0.001,
        **kwargs,
    ):
        del qkv_fused  # fused or not, the checkpoint loads into the one q/k/v projection
        if attn_type not in ("eva", "rope"):
            raise ValueError(f"attn_type={attn_type!r} is not 'eva' or 'rope'")
        if use_post_norm:
            if kwargs.get("qk_norm"):
                raise ValueError("use_post_norm=True has no qk_norm (as timm's Eva): drop qk_norm")
            kwargs.update(block_fn="res_post", init_values=None)
        fc_norm = global_pool == "avg" if use_fc_norm is None else use_fc_norm
        post_norm = not fc_norm if use_post_transformer_norm is None else use_post_transformer_norm
        if fc_norm and post_norm:
            raise ValueError(
                "use_fc_norm and use_post_transformer_norm both True: one final norm is built "
                "here, drop one"
            )
        super().__init__(
            global_pool=global_pool,
            mlp_layer="swiglu" if swiglu_mlp else "mlp",
            scale_mlp_norm=scale_mlp,
            scale_attn_norm=scale_attn_inner,
            reg_tokens=num_reg_tokens,
            pre_norm=use_pre_transformer_norm,
            fc_norm=fc_norm,
            final_norm=fc_norm or post_norm,
            head_init_scale=head_init_scale,
            pool_include_prefix=True,
            **kwargs,
        )
