# ViT-Base/14 at 224.
from .vit_base_patch16_224 import model

model.patch_size = 14
