# ViT-Huge/14 at 224.
from .vit_base_patch16_224 import model

model.embed_dim = 1280
model.depth = 32
model.num_heads = 16
model.patch_size = 14
