# ViT-Tiny/16 at 224.
from .vit_base_patch16_224 import model

model.embed_dim = 192
model.num_heads = 3
