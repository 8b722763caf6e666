# ViT-Small/16 at 224.
from .vit_base_patch16_224 import model

model.embed_dim = 384
model.num_heads = 6
