# ViT-Base/16 at 384.
from .vit_base_patch16_224 import model

model.img_size = 384
