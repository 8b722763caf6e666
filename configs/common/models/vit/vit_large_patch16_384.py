# ViT-Large/16 at 384.
from .vit_base_patch16_224 import model

model.embed_dim = 1024
model.depth = 24
model.num_heads = 16
model.img_size = 384
