# Demo, step 2: fine-tune the step-1 model on all 10 digits at 24 px (new head, position embedding
# resampled from 4x4 to 6x6), as one fine-tunes an ImageNet model on another ImageFolder.
from .demo_digits_pretrain import dataloader, graph, model, optim, train  # noqa: F401

model.pretrained = "./output/imagenet_finetune/demo_digits_pretrain/model_final"
model.img_size = 24
model.num_classes = 10
dataloader.train.dataset[0].classes = None

optim.params.layer_decay = 0.75
train.output_dir = "./output/imagenet_finetune/demo_digits_finetune"
