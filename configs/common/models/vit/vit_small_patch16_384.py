# ViT-Small/16 at 384.
from .vit_base_patch16_224 import model

model.embed_dim = 384
model.num_heads = 6
model.img_size = 384
