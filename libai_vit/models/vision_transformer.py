"""Vision Transformer (Dosovitskiy et al. 2020; timm's conventions) built from LiBai's layers,
trainable with data, tensor and pipeline (1F1B) parallelism.

Where things live (rules in `libai_vit.parallel`):
- patch_embed, cls_token, pos_embed, pos_drop: the first pipeline stage, replicated (broadcast SBP);
- blocks[i]: the stage of layer i; inside, LiBai's column/row-parallel Linears split heads and MLP
  over tensor-parallel ranks;
- norm / fc_norm, head and the loss: the last stage.
The model takes `images` (and `labels` when training) and returns `{"losses": ...}` in train mode with
labels, `{"prediction_scores": ...}` otherwise, which is what LiBai's trainer and evaluator expect.
"""
import zlib

import numpy as np
import oneflow as flow
from libai.layers import Linear, PatchEmbedding
from oneflow import nn

from libai_vit import parallel
from libai_vit.layers.norm import LayerNorm
from libai_vit.layers.transformer import Block


class VisionTransformer(nn.Module):
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
        class_token=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        norm_eps=1e-6,
        attn_backend="auto",
        loss_func=None,
        init_seed=0,
    ):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool={global_pool!r} must be 'token' or 'avg'")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True (or use global_pool='avg')")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={drop_path_rate} must be in [0, 1)")
        img = img_size if isinstance(img_size, (tuple, list)) else (img_size, img_size)
        patch = patch_size if isinstance(patch_size, (tuple, list)) else (patch_size, patch_size)
        if img[0] % patch[0] or img[1] % patch[1]:
            raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")
        parallel.ensure_setup(depth)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_prefix_tokens = 1 if class_token else 0

        first = dict(placement=parallel.placement(parallel.FIRST), sbp=parallel.broadcast_sbp())
        self.patch_embed = PatchEmbedding(img_size=tuple(img), patch_size=tuple(patch), in_chans=in_chans,
                                          embed_dim=embed_dim, layer_idx=parallel.FIRST)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(flow.zeros(1, 1, embed_dim, **first)) if class_token else None
        self.pos_embed = nn.Parameter(flow.zeros(1, num_patches + self.num_prefix_tokens, embed_dim, **first))
        self.pos_drop = nn.Dropout(p=drop_rate)

        drop_path = np.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth decay rule
        self.blocks = nn.Sequential(*[
            Block(embed_dim, int(embed_dim * mlp_ratio), num_heads, qkv_bias=qkv_bias,
                  attn_backend=attn_backend, attention_dropout_prob=attn_drop_rate,
                  output_dropout_prob=drop_rate, drop_path_prob=drop_path[i], layernorm_epsilon=norm_eps,
                  layer_idx=i)
            for i in range(depth)
        ])
        # timm: global average pooling normalises after pooling (fc_norm) instead of before
        use_fc_norm = global_pool == "avg"
        self.norm = nn.Identity() if use_fc_norm else LayerNorm(embed_dim, eps=norm_eps, layer_idx=parallel.LAST)
        self.fc_norm = LayerNorm(embed_dim, eps=norm_eps, layer_idx=parallel.LAST) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = Linear(embed_dim, num_classes, layer_idx=parallel.LAST) if num_classes > 0 else nn.Identity()
        self.loss_func = nn.CrossEntropyLoss() if loss_func is None else loss_func
        self.init_weights(init_seed)

    # ---------------------------------------------------------------- initialisation
    @flow.no_grad()
    def init_weights(self, seed=0):
        """timm's init (trunc-normal .02 Linears and pos_embed, cls_token N(0, 1e-6), LayerNorm 1/0,
        conv as PyTorch's default), drawn on the host from (seed, parameter name): every layout,
        split or not, gets the same values (OneFlow draws different numbers for split tensors)."""
        kinds = {}
        for mod_name, module in self.named_modules():
            prefix = mod_name + "." if mod_name else ""
            for p_name, _ in module.named_parameters(recurse=False):
                kinds[prefix + p_name] = (type(module), p_name)
        for name, param in self.named_parameters():
            module_type, p_name = kinds[name]
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            shape = tuple(param.shape)
            if name == "cls_token":
                value = rng.normal(0.0, 1e-6, shape)
            elif name == "pos_embed" or (issubclass(module_type, Linear) and p_name == "weight"):
                value = _trunc_normal(rng, shape, std=0.02)
            elif issubclass(module_type, nn.Conv2d):
                fan_in = int(np.prod(self.patch_embed.proj.weight.shape[1:]))
                value = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
            elif issubclass(module_type, LayerNorm) and p_name == "weight":
                value = np.ones(shape)
            else:  # biases
                value = np.zeros(shape)
            _assign(param, value)

    # ---------------------------------------------------------------- forward
    def no_weight_decay(self):
        """Parameter names that take no weight decay (besides 1-D tensors), as timm's models list them."""
        return {"pos_embed", "cls_token"}

    def forward_features(self, images, return_weights=False):
        x = parallel.to_stage(images, parallel.FIRST)
        x = self.patch_embed(x)
        if self.cls_token is not None:
            cls_token = self.cls_token.expand(x.shape[0], -1, -1).to_global(sbp=x.sbp)
            x = flow.cat((cls_token, x), dim=1)
        x = self.pos_drop(x + self.pos_embed.expand(x.shape[0], -1, -1).to_global(sbp=x.sbp))
        weights = []
        for block in self.blocks:
            if return_weights:
                x, w = block(x, return_weights=True)
                weights.append(w)
            else:
                x = block(x)
        x = self.norm(x.to_global(placement=parallel.placement(parallel.LAST)))
        return (x, weights) if return_weights else x

    def forward_head(self, x):
        x = x[:, self.num_prefix_tokens:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        return self.head(self.head_drop(self.fc_norm(x)))

    def forward(self, images, labels=None, return_weights=False):
        features = self.forward_features(images, return_weights=return_weights)
        if return_weights:
            features, weights = features
        logits = self.forward_head(features)
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
        for name in ("patch_embed", "pos_drop", "cls_token", "pos_embed"):
            if getattr(model, name, None) is not None:
                parallel.set_stage(getattr(model, name), parallel.FIRST)
        for i, block in enumerate(model.blocks):
            parallel.set_stage(block, i)
        for name in ("norm", "fc_norm", "head_drop", "head", "loss_func"):
            parallel.set_stage(getattr(model, name), parallel.LAST)


def _trunc_normal(rng, shape, std):
    """N(0, std) truncated at +-2 std (timm's trunc_normal_ bounds), by redrawing the outliers."""
    value = rng.normal(0.0, std, shape)
    out = np.abs(value) > 2 * std
    while out.any():
        value[out] = rng.normal(0.0, std, int(out.sum()))
        out = np.abs(value) > 2 * std
    return value


def _assign(param, value):
    full = flow.tensor(np.asarray(value, dtype=np.float32), placement=param.placement,
                       sbp=[flow.sbp.broadcast] * len(param.sbp))
    param.copy_(full.to_global(sbp=param.sbp))
