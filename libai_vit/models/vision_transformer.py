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

import zlib

import numpy as np
import oneflow as flow
from libai.layers import Linear
from oneflow import nn

from libai_vit import parallel
from libai_vit.layers.attention_pool import AttentionPoolLatent
from libai_vit.layers.norm import LayerNorm
from libai_vit.layers.pos_embed import PatchEmbed, resample_pos_embed_tensor
from libai_vit.layers.recompute import mark_recomputed, run_recomputed
from libai_vit.layers.rope import RotaryEmbedding2D
from libai_vit.layers.transformer import Block, LayerScale
from libai_vit.models.features import feature_take_indices

GLOBAL_POOLS = ("token", "avg", "map", "")  # "": no pooling (timm's), the tokens go on


class VisionTransformer(nn.Module):
    """Arguments (timm's names and meaning):

    img_size, patch_size, in_chans: the input; `dynamic_img_size=True` also takes other sizes, the
        position embedding (and RoPE grid) resampled on the fly as timm does.
    num_classes: head outputs (0: no head, the pooled features are the output).
    global_pool: 'token' (class token), 'avg' (mean of the patch tokens, then fc_norm), 'map'
        (attention pooling with a learned latent, SigLIP) or '' (none: every token goes on).
    fc_norm: the final LayerNorm after pooling (True) or before it (False); None: after for 'avg'.
    embed_dim, depth, num_heads, mlp_ratio: the transformer's size.
    qkv_bias, qk_norm: biases of the q/k/v projection; LayerNorm over each head's q and k.
    scale_attn_norm: a LayerNorm over the attention's output before its projection (EVA-02 CLIP).
    init_values: LayerScale on both residual branches, initialised to this (None: no LayerScale).
    class_token, reg_tokens: prefix tokens (a class token; DINOv2's registers).
    no_embed_class: the position embedding covers the patches only (prefix tokens get none).
    pre_norm: a LayerNorm after the embeddings (CLIP); the patch projection then has no bias.
    act_layer: the MLP's activation ('gelu', 'quick_gelu', 'gelu_tanh', 'silu', 'relu').
    mlp_layer, scale_mlp_norm: 'mlp' or 'swiglu'; a LayerNorm inside the MLP (EVA-02).
    use_abs_pos_emb: a learned position embedding; use_rot_pos_emb: 2D RoPE in every attention, its
        positions rescaled to `ref_feat_shape` (the pre-training grid) when given.
    drop_rate: dropout after the embeddings, the projections and before the head.
    attn_drop_rate: dropout on the attention weights.
    drop_path_rate: stochastic depth, rising linearly to this over the blocks.
    norm_eps: every LayerNorm's epsilon (timm: 1e-6; CLIP's checkpoints 1e-5).
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
        scale_attn_norm=False,
        init_values=None,
        class_token=True,
        reg_tokens=0,
        no_embed_class=False,
        pre_norm=False,
        fc_norm=None,
        dynamic_img_size=False,
        act_layer="gelu",
        mlp_layer="mlp",
        scale_mlp_norm=False,
        use_abs_pos_emb=True,
        use_rot_pos_emb=False,
        ref_feat_shape=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        norm_eps=1e-6,
        attn_backend="auto",
        loss_func=None,
        init_seed=0,
        head_init_scale=1.0,
    ):
        super().__init__()
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool={global_pool!r} must be one of {GLOBAL_POOLS}")
        if global_pool == "token" and not class_token:
            raise ValueError(
                "global_pool='token' needs class_token=True (or use global_pool='avg' or 'map')"
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={drop_path_rate} must be in [0, 1)")
        img = img_size if isinstance(img_size, (tuple, list)) else (img_size, img_size)
        patch = patch_size if isinstance(patch_size, (tuple, list)) else (patch_size, patch_size)
        if img[0] % patch[0] or img[1] % patch[1]:
            raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")
        if use_rot_pos_emb and (embed_dim // num_heads) % 4:
            raise ValueError(
                f"use_rot_pos_emb needs a head dim (embed_dim / num_heads = "
                f"{embed_dim // num_heads}) divisible by 4"
            )
        parallel.ensure_setup(depth)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = (1 if class_token else 0) + reg_tokens
        self.no_embed_class = no_embed_class
        self.init_values = init_values
        self.head_init_scale = head_init_scale
        self.init_seed = init_seed

        first = dict(placement=parallel.placement(parallel.FIRST), sbp=parallel.broadcast_sbp())
        self.patch_embed = PatchEmbed(
            img_size=tuple(img),
            patch_size=tuple(patch),
            in_chans=in_chans,
            embed_dim=embed_dim,
            bias=not pre_norm,
            dynamic_img_size=dynamic_img_size,
            layer_idx=parallel.FIRST,
        )
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(flow.zeros(1, 1, embed_dim, **first)) if class_token else None
        self.reg_token = (
            nn.Parameter(flow.zeros(1, reg_tokens, embed_dim, **first)) if reg_tokens else None
        )
        embed_len = num_patches if no_embed_class else num_patches + self.num_prefix_tokens
        self.pos_embed = (
            nn.Parameter(flow.zeros(1, embed_len, embed_dim, **first)) if use_abs_pos_emb else None
        )
        self.pos_drop = nn.Dropout(p=drop_rate)
        self.norm_pre = (
            LayerNorm(embed_dim, eps=norm_eps, layer_idx=parallel.FIRST)
            if pre_norm
            else nn.Identity()
        )
        self.rope = (
            RotaryEmbedding2D(
                embed_dim // num_heads, ref_feat_shape, num_prefix_tokens=self.num_prefix_tokens
            )
            if use_rot_pos_emb
            else None
        )

        drop_path = np.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth decay rule
        self.blocks = nn.Sequential(
            *[
                Block(
                    embed_dim,
                    int(embed_dim * mlp_ratio),
                    num_heads,
                    qkv_bias=qkv_bias,
                    qk_norm=qk_norm,
                    scale_attn_norm=scale_attn_norm,
                    init_values=init_values,
                    act_layer=act_layer,
                    mlp_layer=mlp_layer,
                    scale_mlp_norm=scale_mlp_norm,
                    attn_backend=attn_backend,
                    attention_dropout_prob=attn_drop_rate,
                    output_dropout_prob=drop_rate,
                    drop_path_prob=drop_path[i],
                    layernorm_epsilon=norm_eps,
                    layer_idx=i,
                )
                for i in range(depth)
            ]
        )
        # timm: average pooling normalises after pooling (fc_norm) instead of before
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        last = dict(eps=norm_eps, layer_idx=parallel.LAST)
        self.norm = nn.Identity() if use_fc_norm else LayerNorm(embed_dim, **last)
        self.attn_pool = (
            AttentionPoolLatent(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias=qkv_bias,
                norm_eps=norm_eps,
                act_layer=act_layer,
                attn_backend=attn_backend,
            )
            if global_pool == "map"
            else None
        )
        self.fc_norm = LayerNorm(embed_dim, **last) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = (
            Linear(embed_dim, num_classes, layer_idx=parallel.LAST)
            if num_classes > 0
            else nn.Identity()
        )
        self.loss_func = nn.CrossEntropyLoss() if loss_func is None else loss_func
        self.init_weights(init_seed)

    def no_weight_decay(self):
        """Parameters trained without weight decay besides biases and norms (timm's set)."""
        return {"pos_embed", "cls_token", "reg_token"}

    # ---------------------------------------------------------------- initialisation
    @flow.no_grad()
    def init_weights(self, seed=0):
        """timm's init (trunc-normal .02 Linears and pos_embed, class/register tokens N(0, 1e-6),
        the pooling latent trunc-normal dim^-0.5, LayerScale init_values, LayerNorm 1/0, conv as
        PyTorch's default), drawn on the host from (seed, parameter name): every layout, split or
        not, gets the same values (OneFlow draws different numbers for split tensors)."""
        kinds = {}
        for mod_name, module in self.named_modules():
            prefix = mod_name + "." if mod_name else ""
            for p_name, _ in module.named_parameters(recurse=False):
                kinds[prefix + p_name] = (type(module), p_name)
        for name, param in self.named_parameters():
            module_type, p_name = kinds[name]
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            shape = tuple(param.shape)
            if name in ("cls_token", "reg_token"):
                value = rng.normal(0.0, 1e-6, shape)
            elif name == "attn_pool.latent":
                value = _trunc_normal(rng, shape, std=shape[-1] ** -0.5)
            elif name == "pos_embed" or (issubclass(module_type, Linear) and p_name == "weight"):
                value = _trunc_normal(rng, shape, std=0.02)
                if name == "head.weight":
                    value *= self.head_init_scale
            elif issubclass(module_type, nn.Conv2d):
                fan_in = int(np.prod(self.patch_embed.proj.weight.shape[1:]))
                value = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
            elif issubclass(module_type, LayerScale):
                value = np.full(shape, self.init_values)
            elif issubclass(module_type, LayerNorm) and p_name == "weight":
                value = np.ones(shape)
            else:  # biases
                value = np.zeros(shape)
            _assign(param, value)

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
                ),
                x,
            )
        if (
            self.no_embed_class
        ):  # DeiT III, DINOv2 with registers: the prefix tokens get no position
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
        weights = []
        for block in self.blocks:
            if return_weights:
                x, w = block(x, rope=rope, return_weights=True)
                weights.append(w)
            else:
                x = self._run_block(block, x, rope)
        x = self.norm(x.to_global(placement=parallel.placement(parallel.LAST)))
        return (x, weights) if return_weights else x

    def pool(self, x, pool_type=None):
        """The pooled features of `forward_features`' tokens, before fc_norm; `pool_type`
        overrides `global_pool` (timm's)."""
        if self.attn_pool is not None:
            return self.attn_pool(x[:, self.num_prefix_tokens :])
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
        for name in ("patch_embed", "pos_drop", "cls_token", "reg_token", "pos_embed", "norm_pre"):
            if getattr(model, name, None) is not None:
                parallel.set_stage(getattr(model, name), parallel.FIRST)
        for i, block in enumerate(model.blocks):
            parallel.set_stage(block, i)
        for name in ("norm", "attn_pool", "fc_norm", "head_drop", "head", "loss_func"):
            if getattr(model, name, None) is not None:
                parallel.set_stage(getattr(model, name), parallel.LAST)
        if model.to(nn.Module).grad_checkpointing:  # the train graph: see set_grad_checkpointing
            for block in model.blocks:
                mark_recomputed(block)

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
        head = Linear(self.embed_dim, num_classes, layer_idx=parallel.LAST)
        rng = np.random.default_rng([self.init_seed, zlib.crc32(b"head.weight")])
        shape = tuple(head.weight.shape)
        _assign(head.weight, _trunc_normal(rng, shape, std=0.02) * self.head_init_scale)
        _assign(head.bias, np.zeros(tuple(head.bias.shape)))
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
        last = parallel.placement(parallel.LAST)
        intermediates = []
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        for i, block in enumerate(blocks):
            x = self._run_block(block, x, rope)
            if i in take:
                y = x.to_global(placement=last)
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
        return self.norm(x.to_global(placement=last)), intermediates

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

    def set_grad_checkpointing(self, enable=True):
        """Recompute each block's activations in the backward pass instead of keeping them (eager
        and nn.Graph: libai_vit.layers.recompute); the losses and gradients stay the same (also with
        drop path and dropout, except attn_drop_rate > 0 in eager mode, whose recomputed pass draws
        new masks)."""
        self.grad_checkpointing = enable

    def _run_block(self, block, x, rope):
        if self.grad_checkpointing:
            return run_recomputed(block, x, rope=rope)
        return block(x, rope=rope)

    def group_matcher(self, coarse=False):
        """Regexes grouping the parameter names into layers for layer-wise lr decay: the stem
        (embeddings, prefix tokens, norm_pre), then block i; a name matching neither (the final
        norm, the pooling, fc_norm, the head) is in the top layer. timm's ViT also matches
        `^norm` into the last block's layer; here the final norm stays in the top layer with the
        head, as in BEiT's and MAE's layer decay (which the fine-tuning recipes reproduce).
        `coarse` is accepted and changes nothing, as in timm's ViT."""
        del coarse
        return dict(
            stem=r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre",
            blocks=[(r"^blocks\.(\d+)", None)],
        )


def _trunc_normal(rng, shape, std):
    """N(0, std) truncated at +-2 std (timm's trunc_normal_ bounds), by redrawing the outliers."""
    value = rng.normal(0.0, std, shape)
    out = np.abs(value) > 2 * std
    while out.any():
        value[out] = rng.normal(0.0, std, int(out.sum()))
        out = np.abs(value) > 2 * std
    return value


def _batch_like(param, x):
    """A (1, n, C) parameter expanded over `x`'s batch and given its SBP."""
    return param.expand(x.shape[0], -1, -1).to_global(sbp=x.sbp)


def _assign(param, value):
    full = flow.tensor(
        np.asarray(value, dtype=np.float32),
        placement=param.placement,
        sbp=[flow.sbp.broadcast] * len(param.sbp),
    )
    param.copy_(full.to_global(sbp=param.sbp))
