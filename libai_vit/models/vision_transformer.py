"""Vision Transformer (Dosovitskiy et al. 2020) with timm's options, built from LiBai's layers and
trainable with data, tensor and pipeline (1F1B) parallelism.

Where things live (rules in `libai_vit.parallel`):
- patch_embed, cls_token, reg_token, pos_embed, norm_pre: the first pipeline stage, replicated;
- blocks[i]: the stage of layer i; inside, LiBai's column/row-parallel Linears split heads and MLP
  over tensor-parallel ranks (see `libai_vit.layers.transformer`);
- norm, attn_pool, fc_norm, head and the loss: the last stage.
The model takes `images` (and `labels` when training) and returns `{"losses": ...}` in train mode
with labels, `{"prediction_scores": ...}` otherwise, as LiBai's trainer and evaluator expect; with
`output = "tensor"` (`create_model(..., output="tensor")`) it returns the logits, as timm's does.

The families of timm's `vision_transformer.py` are options of this one class (DeiT III: LayerScale
and no_embed_class; DINOv2: LayerScale and registers; CLIP: pre_norm, quick_gelu; SigLIP: 'map'
pooling); EVA-02 (2D RoPE, SwiGLU) is `libai_vit.models.eva.Eva` (this class, EVA's option names).
"""

from functools import partial
from types import SimpleNamespace

import numpy as np
import oneflow as flow
from libai.layers import Linear
from oneflow import nn

from libai_vit import parallel
from libai_vit.layers import init
from libai_vit.layers.attention_pool import AttentionPoolLatent
from libai_vit.layers.linear import ReplicatedLinear
from libai_vit.layers.mlp import mlp_hidden
from libai_vit.layers.norm import LayerNorm, RMSNorm
from libai_vit.layers.norm import norm_layer as make_norm
from libai_vit.layers.pos_embed import PatchEmbed, resample_pos_embed_tensor
from libai_vit.layers.recompute import mark_recomputed, run_recomputed
from libai_vit.layers.rope import RotaryEmbedding2D
from libai_vit.layers.transformer import (
    Block,
    LayerScale,
    ParallelScalingBlock,
    ParallelThingsBlock,
    attention_modules,
)
from libai_vit.models.features import feature_take_indices

# the modules before the blocks (the first pipeline stage; layer 0 of layer-wise lr decay) and after
# them (the last stage; the top layer)
STEM = ("patch_embed", "pos_drop", "cls_token", "reg_token", "pos_embed", "norm_pre")
TOP = ("norm", "attn_pool", "fc_norm", "head_drop", "head", "loss_func")
GLOBAL_POOLS = ("token", "avg", "map", "")  # "": no pooling (timm's), the tokens go on
# timm's block_fn kinds
BLOCK_FNS = {
    "block": Block,
    "res_post": partial(Block, post_norm=True),
    "parallel_scaling": ParallelScalingBlock,
    "parallel_things": ParallelThingsBlock,
}


def argument_problem(prefix="", **a):
    """The first of VisionTransformer's argument rules that the arguments `a` break, as one line
    naming the keys (each `prefix` + timm's name), or None; a rule whose arguments are not all given
    is not checked. The constructor raises it with every argument; the pre-launch check
    (config.validate_values) reports it from the config's keys before any rank starts."""

    def given(*keys):
        return all(k in a for k in keys)

    if given("global_pool") and a["global_pool"] not in GLOBAL_POOLS:
        return f"{prefix}global_pool={a['global_pool']!r} must be one of {GLOBAL_POOLS}"
    if given("global_pool", "class_token") and a["global_pool"] == "token" and not a["class_token"]:
        return (
            f"{prefix}global_pool='token' needs {prefix}class_token=True (or use global_pool='avg' "
            f"or 'map')"
        )
    rate = a.get("drop_path_rate", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        return f"{prefix}drop_path_rate={rate} must be in [0, 1)"
    if given("img_size", "patch_size"):
        img, patch = a["img_size"], a["patch_size"]
        img = list(img) if isinstance(img, (tuple, list)) else [img, img]
        patch = list(patch) if isinstance(patch, (tuple, list)) else [patch, patch]
        if (
            any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in img + patch)
            or img[0] % patch[0]
            or img[1] % patch[1]
        ):
            return (
                f"{prefix}img_size={a['img_size']} must be positive and divisible by "
                f"{prefix}patch_size={a['patch_size']}"
            )
    if a.get("qk_norm_whole_width") and not a.get("qk_norm"):
        return (
            f"{prefix}qk_norm_whole_width=True is a kind of qk norm: set {prefix}qk_norm=True too"
        )
    block_fn = a.get("block_fn", "block")
    if block_fn not in BLOCK_FNS:
        return f"{prefix}block_fn={block_fn!r} is not one of {sorted(BLOCK_FNS)}"
    if block_fn == "res_post" and a.get("init_values"):
        return (
            f"{prefix}block_fn='res_post' has no LayerScale (EVA-02-E's post-norm blocks): drop "
            f"{prefix}init_values"
        )
    plain = dict(scale_attn_norm=False, scale_mlp_norm=False, mlp_layer="mlp", proj_bias=True)
    if block_fn == "parallel_scaling" and any(a.get(k, v) != v for k, v in plain.items()):
        return (
            f"{prefix}block_fn='parallel_scaling' has a plain MLP, no scale norms and output "
            f"biases (as timm's): drop scale_attn_norm / scale_mlp_norm / mlp_layer / proj_bias"
        )
    if given("use_rot_pos_emb", "embed_dim", "num_heads") and a["use_rot_pos_emb"]:
        head_dim = a["embed_dim"] // a["num_heads"]
        if head_dim % 4:
            return (
                f"{prefix}use_rot_pos_emb needs a head dim ({prefix}embed_dim / "
                f"{prefix}num_heads = {head_dim}) divisible by 4"
            )
    return None


class VisionTransformer(nn.Module):
    """Arguments (timm's names and meaning):

    img_size, patch_size, in_chans: the input; `dynamic_img_size=True` also takes other sizes, the
        position embedding (and RoPE grid) resampled on the fly as timm does.
    pos_embed_antialias: that resampling antialiased (timm's, whose bicubic is then PIL's) or not
        (torch's plain bicubic: InternViT's own code).
    num_classes: head outputs (0: no head, the pooled features are the output).
    global_pool: 'token' (class token), 'avg' (mean of the patch tokens, then fc_norm), 'map'
        (attention pooling with a learned latent, SigLIP) or '' (none: every token goes on).
    fc_norm: the final LayerNorm after pooling (True) or before it (False); None: after for 'avg'.
    pool_include_prefix: the 'map' pool attends over the prefix tokens too (timm's; Eva's does).
    attn_pool_num_heads, attn_pool_mlp_ratio: the 'map' pool's heads and MLP ratio (None: the
        blocks'; Perception Encoder: 8 and 4).
    embed_dim, depth, num_heads, mlp_ratio: the transformer's size.
    qkv_bias, qk_norm: biases of the q/k/v projection; a `norm_layer` over each head's q and k.
    qk_norm_whole_width: the qk norm over all heads' channels together (InternViT-6B, not in timm).
    proj_bias: biases of the attention's output projection and of the MLP's layers (AIMv2: False).
    scale_attn_norm: a LayerNorm over the attention's output before its projection (EVA-02 CLIP).
    init_values: LayerScale on both residual branches, initialised to this (None: no LayerScale).
    class_token, reg_tokens: prefix tokens (a class token; DINOv2's registers).
    no_embed_class: the position embedding covers the patches only (prefix tokens get none).
    pre_norm: a LayerNorm after the embeddings (CLIP); the patch projection then has no bias.
    embed_norm_layer: a norm ('layernorm' or 'rmsnorm') of the patch embeddings, before the
        position embedding is added (AIMv2); None: none.
    final_norm: the norm after the blocks (or after pooling, see fc_norm); False: none (InternViT).
    act_layer: the MLP's activation ('gelu', 'quick_gelu', 'gelu_tanh', 'silu', 'relu').
    mlp_layer, scale_mlp_norm: 'mlp', 'swiglu' or 'swiglu_packed'; a LayerNorm inside the MLP
        (EVA-02). 'swiglu_packed' is timm's SwiGLUPacked (DINOv2 giant): int(embed_dim * mlp_ratio)
        counts the gate and value units together, so the SwiGLU has half as many hidden units.
    swiglu_align_to: a SwiGLU's hidden units rounded up to a multiple of this (DINOv3; 0: none).
    use_abs_pos_emb: a learned position embedding; use_rot_pos_emb: 2D RoPE in every attention, its
        positions rescaled to `ref_feat_shape` (the pre-training grid) when given.
    rope_type, rope_temperature, rope_rotate_half: the RoPE kind ('cat': EVA-02's; 'dinov3': patch
        centres normalised to [-1, 1]), its temperature and dim layout (see libai_vit.layers.rope).
    rope_grid_offset, rope_grid_indexing: added to the patch positions (PE: 1); 'ij' or 'xy' (PE):
        which frequencies turn with the row and which with the column.
    drop_rate: dropout after the embeddings, the projections and before the head.
    attn_drop_rate: dropout on the attention weights.
    drop_path_rate: stochastic depth, rising linearly to this over the blocks.
    norm_eps: every LayerNorm's epsilon (timm: 1e-6; CLIP's checkpoints 1e-5).
    norm_layer: every norm 'layernorm' or timm's 'rmsnorm' (x / rms(x) * weight).
    block_fn: 'block' (pre-norm, attention then MLP), 'res_post' (timm's ResPostBlock, EVA-02-E's
        post-norm: x + norm(attn(x)), then x + norm(mlp(x)); no LayerScale), 'parallel_scaling'
        (timm's ParallelScalingBlock, ViT-22B: attention and MLP side by side on one norm, summed)
        or 'parallel_things' (timm's ParallelThingsBlock, `*_18x2_*`: two attentions side by side,
        summed, then two MLPs).
    attn_backend: 'math', 'fused' (CUDA), 'flash' or 'auto' (see libai_vit.layers.attention).
    loss_func: the training loss (default cross-entropy).
    init_seed: the weights' seed; every layout gets the same values.
    head_init_scale: the new head's initial weights scaled by this (EVA: 0.001).
    """

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        in_chans=3,
        num_classes=1000,
        global_pool="token",
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_norm=False,
        qk_norm_whole_width=False,
        proj_bias=True,
        scale_attn_norm=False,
        init_values=None,
        class_token=True,
        reg_tokens=0,
        no_embed_class=False,
        pre_norm=False,
        embed_norm_layer=None,
        final_norm=True,
        fc_norm=None,
        pool_include_prefix=False,
        attn_pool_num_heads=None,
        attn_pool_mlp_ratio=None,
        dynamic_img_size=False,
        pos_embed_antialias=True,
        act_layer="gelu",
        mlp_layer="mlp",
        scale_mlp_norm=False,
        swiglu_align_to=0,
        use_abs_pos_emb=True,
        use_rot_pos_emb=False,
        ref_feat_shape=None,
        rope_type="cat",
        rope_temperature=10000.0,
        rope_rotate_half=False,
        rope_grid_offset=0.0,
        rope_grid_indexing="ij",
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        norm_eps=1e-6,
        norm_layer="layernorm",
        block_fn="block",
        attn_backend="auto",
        loss_func=None,
        init_seed=0,
        head_init_scale=1.0,
    ):
        super().__init__()
        # the arguments by name, for the rules and the build steps below
        a = SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})
        problem = argument_problem(**vars(a))
        if problem:
            raise ValueError(problem)
        parallel.ensure_setup(depth)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = embed_dim
        self.mlp_layer = mlp_layer  # timm's name, which the export to timm's keys follows
        self.depth = depth
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = (1 if class_token else 0) + reg_tokens
        self.pool_include_prefix = pool_include_prefix
        self.no_embed_class = no_embed_class
        self.pos_embed_antialias = pos_embed_antialias
        self.init_values = init_values
        self.head_init_scale = head_init_scale
        self.init_seed = init_seed
        self._build_stem(a)
        self.blocks = self._build_blocks(a)
        self._build_top(a)
        self.loss_func = nn.CrossEntropyLoss() if loss_func is None else loss_func
        self.init_weights(init_seed)

    def _build_stem(self, a):
        """The first stage: patch embedding, prefix tokens, position embedding, norm_pre; and the
        RoPE tables, which every block uses."""
        img = a.img_size if isinstance(a.img_size, (tuple, list)) else (a.img_size, a.img_size)
        patch = a.patch_size
        patch = patch if isinstance(patch, (tuple, list)) else (patch, patch)
        dim, first = a.embed_dim, parallel.FIRST
        self.patch_embed = PatchEmbed(
            img_size=tuple(img),
            patch_size=tuple(patch),
            in_chans=a.in_chans,
            embed_dim=dim,
            bias=not a.pre_norm,
            norm=make_norm(a.embed_norm_layer, dim, a.norm_eps, first)
            if a.embed_norm_layer
            else None,
            dynamic_img_size=a.dynamic_img_size,
            layer_idx=first,
        )

        def zeros(*shape):
            on_first = dict(placement=parallel.placement(first), sbp=parallel.broadcast_sbp())
            return nn.Parameter(flow.zeros(*shape, **on_first))

        self.cls_token = zeros(1, 1, dim) if a.class_token else None
        self.reg_token = zeros(1, a.reg_tokens, dim) if a.reg_tokens else None
        num_patches = self.patch_embed.num_patches
        embed_len = num_patches if a.no_embed_class else num_patches + self.num_prefix_tokens
        self.pos_embed = zeros(1, embed_len, dim) if a.use_abs_pos_emb else None
        self.pos_drop = nn.Dropout(p=a.drop_rate)
        self.norm_pre = (
            make_norm(a.norm_layer, dim, a.norm_eps, first) if a.pre_norm else nn.Identity()
        )
        self.rope = (
            RotaryEmbedding2D(
                dim // a.num_heads,
                a.ref_feat_shape,
                temperature=a.rope_temperature,
                num_prefix_tokens=self.num_prefix_tokens,
                rope_type=a.rope_type,
                rotate_half=a.rope_rotate_half,
                grid_offset=a.rope_grid_offset,
                grid_indexing=a.rope_grid_indexing,
            )
            if a.use_rot_pos_emb
            else None
        )

    @staticmethod
    def _build_blocks(a):
        """The blocks, block i on the stage of layer i, stochastic depth rising linearly."""
        mlp_layer, ffn_hidden = mlp_hidden(a.embed_dim, a.mlp_ratio, a.mlp_layer, a.swiglu_align_to)
        drop_path = np.linspace(0, a.drop_path_rate, a.depth).tolist()
        block_options = (
            dict(
                proj_bias=a.proj_bias,
                scale_attn_norm=a.scale_attn_norm,
                mlp_layer=mlp_layer,
                scale_mlp_norm=a.scale_mlp_norm,
            )
            if a.block_fn != "parallel_scaling"  # its options are fixed (argument_problem)
            else {}
        )
        return nn.Sequential(
            *[
                BLOCK_FNS[a.block_fn](
                    a.embed_dim,
                    ffn_hidden,
                    a.num_heads,
                    qkv_bias=a.qkv_bias,
                    qk_norm=a.qk_norm,
                    qk_norm_whole_width=a.qk_norm_whole_width,
                    init_values=a.init_values,
                    act_layer=a.act_layer,
                    **block_options,
                    norm_layer=a.norm_layer,
                    attn_backend=a.attn_backend,
                    attention_dropout_prob=a.attn_drop_rate,
                    output_dropout_prob=a.drop_rate,
                    drop_path_prob=drop_path[i],
                    layernorm_epsilon=a.norm_eps,
                    layer_idx=i,
                )
                for i in range(a.depth)
            ]
        )

    def _build_top(self, a):
        """The last stage: the final norm, the pooling, fc_norm and the head."""
        # timm: average pooling normalises after pooling (fc_norm) instead of before
        use_fc_norm = a.global_pool == "avg" if a.fc_norm is None else a.fc_norm
        last = dict(name=a.norm_layer, dim=a.embed_dim, eps=a.norm_eps, layer_idx=parallel.LAST)
        self.norm = make_norm(**last) if a.final_norm and not use_fc_norm else nn.Identity()
        self.attn_pool = (
            AttentionPoolLatent(
                a.embed_dim,
                a.attn_pool_num_heads or a.num_heads,
                a.attn_pool_mlp_ratio or a.mlp_ratio,
                qkv_bias=a.qkv_bias,
                norm_eps=a.norm_eps,
                act_layer=a.act_layer,
                attn_backend=a.attn_backend,
            )
            if a.global_pool == "map"
            else None
        )
        self.fc_norm = make_norm(**last) if a.final_norm and use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(a.drop_rate)
        self.head = (
            ReplicatedLinear(a.embed_dim, a.num_classes, layer_idx=parallel.LAST)
            if a.num_classes > 0
            else nn.Identity()
        )

    def no_weight_decay(self):
        """Parameters trained without weight decay besides biases and norms (timm's set)."""
        return {"pos_embed", "cls_token", "reg_token"}

    # ---------------------------------------------------------------- initialisation
    @flow.no_grad()
    def init_weights(self, seed=0):
        """timm's init (trunc-normal .02 Linears and pos_embed, class/register tokens N(0, 1e-6),
        the pooling latent trunc-normal dim^-0.5, LayerScale init_values, LayerNorm 1/0, conv as
        PyTorch's default), drawn on the host from (seed, parameter name) by blocks, each rank only
        the blocks of its own shards: every layout, split or not, gets the same values (OneFlow
        draws different numbers for split tensors), and no rank draws the whole model."""
        kinds = {}
        for mod_name, module in self.named_modules():
            prefix = mod_name + "." if mod_name else ""
            for p_name, _ in module.named_parameters(recurse=False):
                kinds[prefix + p_name] = (type(module), p_name)
        for name, param in self.named_parameters():
            module_type, p_name = kinds[name]
            shape = tuple(param.shape)
            draw = None
            if name in ("cls_token", "reg_token"):
                draw = init.normal(1e-6)
            elif name == "attn_pool.latent":
                draw = init.trunc_normal(shape[-1] ** -0.5)
            elif name == "head.weight":
                draw = init.trunc_normal(0.02 * self.head_init_scale)
            elif name == "pos_embed" or (issubclass(module_type, Linear) and p_name == "weight"):
                draw = init.trunc_normal(0.02)
            elif issubclass(module_type, nn.Conv2d):
                fan_in = np.prod(self.patch_embed.proj.weight.shape[1:])
                draw = init.uniform(1 / np.sqrt(fan_in))
            elif issubclass(module_type, LayerScale):
                fill = self.init_values
            elif issubclass(module_type, (LayerNorm, RMSNorm)) and p_name == "weight":
                fill = 1.0
            else:  # biases
                fill = 0.0
            if draw is not None:
                parallel.write_local(param, partial(init.sample, seed, name, shape, draw=draw))
            else:
                parallel.write_local(param, partial(_full, fill))

    # ---------------------------------------------------------------- forward
    def _pos_embed(self, x, grid):
        """Add the position embedding (resampled when the grid is not the stored one) and the
        prefix tokens."""
        prefix = [_batch_like(t, x) for t in (self.cls_token, self.reg_token) if t is not None]
        pos_embed = self.pos_embed
        if pos_embed is not None:
            pos_embed = _batch_like(
                resample_pos_embed_tensor(
                    pos_embed,
                    self.patch_embed.grid_size,
                    grid,
                    0 if self.no_embed_class else self.num_prefix_tokens,
                    self.pos_embed_antialias,
                ),
                x,
            )
        # DeiT III, DINOv2 with registers: the prefix tokens get no position
        if self.no_embed_class:
            x = x if pos_embed is None else x + pos_embed
            x = flow.cat(prefix + [x], dim=1) if prefix else x
        else:
            x = flow.cat(prefix + [x], dim=1) if prefix else x
            x = x if pos_embed is None else x + pos_embed
        return self.pos_drop(x)

    def forward_features(self, images, return_weights=False):
        x, grid = self.patch_embed(parallel.to_stage(images, parallel.FIRST))
        x = self.norm_pre(self._pos_embed(x, grid))
        rope = self.rope(grid, like=x) if self.rope is not None else None
        weights, tokens = [], x.shape[1]
        for block in self.blocks:
            if return_weights:
                x, w = block(x, rope=rope, return_weights=True, num_tokens=tokens)
                weights.append(w)
            else:
                x = self._run_block(block, x, rope, tokens)
        x = x.to_global(placement=parallel.placement(parallel.LAST))
        x = self.norm(parallel.gather_tokens(x, tokens))
        return (x, weights) if return_weights else x

    def pool(self, x, pool_type=None):
        """The pooled features of `forward_features`' tokens, before fc_norm; `pool_type`
        overrides `global_pool` (timm's)."""
        if self.attn_pool is not None:
            return self.attn_pool(x if self.pool_include_prefix else x[:, self.num_prefix_tokens :])
        pool_type = self.global_pool if pool_type is None else pool_type
        if pool_type == "avg":
            return x[:, self.num_prefix_tokens :].mean(dim=1)
        return x[:, 0] if pool_type == "token" else x

    def forward_head(self, x, pre_logits=False):
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, images, labels=None, return_weights=False):
        if self.output == "tensor" and (labels is not None or return_weights):
            raise ValueError(
                "a model built with output='tensor' returns the logits only (as timm's): compute "
                "the loss from them, or build it with output='dict' for labels / return_weights"
            )
        features = self.forward_features(images, return_weights=return_weights)
        if return_weights:
            features, weights = features
        logits = self.forward_head(features)
        if self.output == "tensor":
            return logits
        if labels is not None and self.training:
            labels = parallel.to_stage(labels, parallel.LAST)
            return {"losses": self.loss_func(logits, labels)}
        out = {"prediction_scores": logits}
        if return_weights:
            out["attention_weights"] = weights
        return out

    # ---------------------------------------------------------------- pipeline stages (nn.Graph)
    @staticmethod
    def set_pipeline_stage_id(model):
        """`model` is the nn.Graph proxy of a VisionTransformer; called by LiBai's GraphBase."""
        for name in STEM:
            if getattr(model, name, None) is not None:
                parallel.set_stage(getattr(model, name), parallel.FIRST)
        for i, block in enumerate(model.blocks):
            parallel.set_stage(block, i)
        for name in TOP:
            if getattr(model, name, None) is not None:
                parallel.set_stage(getattr(model, name), parallel.LAST)
        origin = model.to(nn.Module)
        if origin.grad_checkpointing:  # the train graph: see set_grad_checkpointing
            for i, block in enumerate(model.blocks):
                if origin._recomputes(i):
                    attention = origin.grad_checkpointing_granularity == "attention"
                    for module in attention_modules(block) if attention else [block]:
                        mark_recomputed(module)

    # ---------------------------------------------------------------- timm's model API
    # timm's names, arguments and meaning (timm/models/vision_transformer.py is the reference).

    # what forward returns: "dict" (LiBai's trainer and evaluator: {"losses"} or
    # {"prediction_scores"}) or "tensor" (timm's: the logits); create_model(output=...) sets it
    output = "dict"

    @property
    def num_features(self):
        """Channels of forward_features' tokens and of the pooled features."""
        return self.embed_dim

    head_hidden_size = num_features

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        """A new head of `num_classes` outputs (0: none, the pooled features are the output), on
        the last stage as the head at construction, initialised as it is; `global_pool` (if given)
        changes the pooling ('map' only keeps an attention pool that exists; any other drops it)."""
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool={global_pool!r} must be one of {GLOBAL_POOLS}")
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("global_pool='token' needs the class token (class_token=True)")
            if global_pool == "map" and self.attn_pool is None:
                raise ValueError(
                    "reset_classifier cannot add attention pooling: build the model with "
                    "global_pool='map'"
                )
            if global_pool != "map":
                self.attn_pool = None
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = self._new_head(num_classes)
        self.head.train(self.training)

    @flow.no_grad()
    def _new_head(self, num_classes):
        if num_classes <= 0:
            return nn.Identity()
        head = ReplicatedLinear(self.embed_dim, num_classes, layer_idx=parallel.LAST)
        draw = init.trunc_normal(0.02 * self.head_init_scale)  # as init_weights draws it
        shape = tuple(head.weight.shape)
        parallel.write_local(
            head.weight, partial(init.sample, self.init_seed, "head.weight", shape, draw=draw)
        )
        parallel.write_local(head.bias, partial(_full, 0.0))
        return head

    _pretrained_cfg = None  # timm's pretrained config of the zoo name (create_model sets it)

    @property
    def pretrained_cfg(self):
        """timm's pretrained config of the model's zoo name (input_size, mean, std, crop_pct,
        crop_mode, interpolation, num_classes of the pretrained head, classifier, first_conv),
        with the input size this model is built for (as timm's `set_input_size` records it);
        built outside the zoo: only what the model itself knows (libai_vit.data.resolve_data_config
        fills in timm's defaults)."""
        cfg = dict(num_classes=self.num_classes, classifier="head", first_conv="patch_embed.proj")
        cfg.update(
            {
                k: tuple(v) if isinstance(v, list) else v
                for k, v in (self._pretrained_cfg or {}).items()
            }
        )
        cfg["input_size"] = (self.patch_embed.proj.in_channels, *self.patch_embed.img_size)
        return cfg

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg):
        self._pretrained_cfg = dict(cfg)

    default_cfg = pretrained_cfg  # timm's older name

    @property
    def feature_info(self):
        """Per block: its module name, channels and reduction (input pixels per feature pixel)."""
        reduction = max(self.patch_embed.patch_size)
        return [
            dict(module=f"blocks.{i}", num_chs=self.embed_dim, reduction=reduction)
            for i in range(self.depth)
        ]

    def forward_intermediates(
        self,
        x,
        indices=None,
        return_prefix_tokens=False,
        norm=False,
        stop_early=False,
        output_fmt="NCHW",
        intermediates_only=False,
    ):
        """The outputs of the blocks `indices` (None: all; an int n: the last n; a list: those,
        negative from the end), each with the final norm applied when `norm`, the prefix tokens
        (class, registers) split off (returned beside each as (features, prefix) when
        `return_prefix_tokens`), as NCHW maps (or NLC tokens); with the normed final tokens
        first unless `intermediates_only`. `stop_early`: no blocks after the last one taken (the
        final tokens are then that block's). Every output is on the last stage's ranks (blocks of
        other pipeline stages hand theirs over), replicated across tensor-parallel ranks."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt={output_fmt!r} must be 'NCHW' or 'NLC'")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        batch = x.shape[0]
        x, grid = self.patch_embed(parallel.to_stage(x, parallel.FIRST))
        x = self.norm_pre(self._pos_embed(x, grid))
        rope = self.rope(grid, like=x) if self.rope is not None else None
        last, tokens = parallel.placement(parallel.LAST), x.shape[1]
        intermediates = []
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        for i, block in enumerate(blocks):
            x = self._run_block(block, x, rope, tokens)
            if i in take:
                y = parallel.gather_tokens(x.to_global(placement=last), tokens)
                intermediates.append(self.norm(y) if norm else y)
        n = self.num_prefix_tokens
        prefix = [y[:, :n] for y in intermediates]
        intermediates = [y[:, n:] for y in intermediates]
        if output_fmt == "NCHW":
            intermediates = [
                y.reshape(batch, grid[0], grid[1], -1).permute(0, 3, 1, 2) for y in intermediates
            ]
        if return_prefix_tokens and n:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(parallel.gather_tokens(x.to_global(placement=last), tokens)), intermediates

    def get_intermediate_layers(
        self, x, n=1, reshape=False, return_prefix_tokens=False, norm=False
    ):
        """DINO's interface (timm keeps it): forward_intermediates' intermediates of blocks `n`,
        NCHW if `reshape` else NLC."""
        return self.forward_intermediates(
            x,
            n,
            return_prefix_tokens=return_prefix_tokens,
            norm=norm,
            output_fmt="NCHW" if reshape else "NLC",
            intermediates_only=True,
        )

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drop the blocks after the last of `indices` (as in forward_intermediates), the final
        norm if `prune_norm`, and the pooling and head if `prune_head`; returns the absolute
        indices kept."""
        take, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        return take

    grad_checkpointing = False
    grad_checkpointing_granularity = "block"
    grad_checkpointing_every = 1

    def set_grad_checkpointing(self, enable=True, granularity="block", every=1):
        """Recompute activations in the backward pass instead of keeping them (eager and nn.Graph:
        libai_vit.layers.recompute); the losses and gradients stay the same (also with drop path
        and dropout, except attn_drop_rate > 0 in eager mode, whose recomputed pass draws new
        masks). timm's call recomputes every block; beyond it (Megatron's choices):
        `granularity`: "block" (the whole block) or "attention" (its attention only: qkv, the
        softmax core and the output projection, the part whose activations grow with the tokens);
        `every`: blocks 0, k, 2k, ... only (k = `every`), trading less recomputation for more
        memory."""
        if granularity not in ("block", "attention"):
            raise ValueError(f"granularity={granularity!r}: use 'block' or 'attention'")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every={every!r}: use an integer >= 1 (1: every block)")
        if (
            granularity == "attention"
            and enable
            and self.blocks
            and not hasattr(self.blocks[0], "recompute_attention")
        ):
            raise ValueError(
                f"granularity='attention': {type(self.blocks[0]).__name__} computes attention "
                f"and MLP as one sum, so its attention cannot be recomputed alone; use 'block'"
            )
        self.grad_checkpointing = enable
        self.grad_checkpointing_granularity, self.grad_checkpointing_every = granularity, every
        for i, block in enumerate(self.blocks):
            if hasattr(block, "recompute_attention"):
                block.recompute_attention = enable and granularity == "attention" and i % every == 0

    def _recomputes(self, i):
        return self.grad_checkpointing and i % self.grad_checkpointing_every == 0

    def _run_block(self, block, x, rope, num_tokens):
        if self._recomputes(block.layer_idx) and self.grad_checkpointing_granularity == "block":
            return run_recomputed(block, x, rope=rope, num_tokens=num_tokens)
        return block(x, rope=rope, num_tokens=num_tokens)

    def group_matcher(self, coarse=False):
        """Regexes grouping the parameter names into layers for layer-wise lr decay: the stem
        (embeddings, prefix tokens, norm_pre), then block i; a name matching neither (the final
        norm, the pooling, fc_norm, the head) is in the top layer. timm's ViT also matches
        `^norm` into the last block's layer; here the final norm stays in the top layer with the
        head, as in BEiT's and MAE's layer decay (which the fine-tuning recipes reproduce).
        `coarse` is accepted and changes nothing, as in timm's ViT."""
        del coarse
        return dict(
            stem=rf"^(?:{'|'.join(STEM)})\b",
            blocks=[(r"^blocks\.(\d+)", None)],
        )


def _batch_like(param, x):
    """A (1, n, C) parameter expanded over `x`'s batch and given its SBP."""
    return param.expand(x.shape[0], -1, -1).to_global(sbp=x.sbp)


def _full(value, region):
    return np.full(tuple(s.stop - s.start for s in region), value)
