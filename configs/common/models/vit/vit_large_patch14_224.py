# ViT-Large/14 at 224.
from .vit_base_patch16_224 import model

model.embed_dim = 1024
model.depth = 24
model.num_heads = 16
model.patch_size = 14
