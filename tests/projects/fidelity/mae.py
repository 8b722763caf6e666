# The MAE fine-tuning recipe (projects/imagenet_finetune/configs/vit_base_patch16_224_mae.py) on the
# reference's tiny model and fixed batches (tests/fixtures/recipes, by
# generators/make_recipe_fixtures.py); the test sets the case's numbers (lr, schedule, layout,
# ...) on the command line.
from tests.projects.recipe_support import on_reference

from ....projects.imagenet_finetune.configs.vit_base_patch16_224_mae import (  # noqa: F401
    dataloader,
    graph,
    model,
    optim,
    train,
)

on_reference(dataloader, model, train)
