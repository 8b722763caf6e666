# ViT-B/16 at 224 (86M parameters); every other size imports this and changes a few numbers.
from libai.config import LazyCall

from libai_vit.models.vision_transformer import VisionTransformer

model = LazyCall(VisionTransformer)(
    img_size=224,
    patch_size=16,
    in_chans=3,
    num_classes=1000,
    global_pool="token",  # "token": class token; "avg": mean of patch tokens + fc_norm (MAE)
    embed_dim=768,
    depth=12,
    num_heads=12,
    mlp_ratio=4.0,
    qkv_bias=True,
    class_token=True,
    drop_rate=0.0,  # dropout after embeddings, attention projection, MLP and before the head
    attn_drop_rate=0.0,  # dropout on attention weights
    drop_path_rate=0.0,  # stochastic depth, rising linearly to this over the blocks
    norm_eps=1e-6,
    attn_backend="auto",  # math / fused (CUDA) / flash (O(N) memory) / auto (the best usable)
    init_seed=0,  # weights are the same for a given seed on every layout
)
