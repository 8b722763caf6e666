# The DeiT III recipe (projects/imagenet_finetune/configs/deit3_base_patch16_224.py) on the
# reference's tiny model and fixed batches (tests/fixtures/recipes, by
# generators/make_recipe_fixtures.py); the test sets the case's numbers (lr, schedule, layout,
# ...) on the command line.
from tests.projects.recipe_support import on_reference

from ....projects.imagenet_finetune.configs.deit3_base_patch16_224 import (  # noqa: F401
    dataloader,
    graph,
    model,
    optim,
    train,
)

# the reference is timm's plain ViT (LayerScale is proven against timm elsewhere)
model.init_values = None
model.no_embed_class = False
on_reference(dataloader, model, train)
