# ViT-B/16 at 224 from an MAE pretrained checkpoint (MAE: 83.6% top-1 on ImageNet, 100 epochs).
from .finetune_common import dataloader, graph, model, optim, train  # noqa: F401
