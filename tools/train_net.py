"""Train (or evaluate) a ViT with LiBai's engine; launched by tools/train.sh.

bash tools/train.sh tools/train_net.py CONFIG NPROC [key=value ...] [--resume] [--eval-only]
"""

import logging
import os
import random
import sys

import numpy as np
import oneflow as flow

import libai_vit  # noqa: F401  (applies the LiBai 0.1.1 compatibility fixes)

# isort: split
from libai.config import default_argument_parser, try_get_key
from libai.engine import default_setup
from libai.utils.logger import setup_logger

from libai_vit import parallel
from libai_vit.config import ConfigError, check_eval_only, load_config, validate
from libai_vit.data.folder import DatasetError
from libai_vit.engine.trainer import (
    DataLoaderError,
    NonFiniteLossError,
    Trainer,
    data_loader_failure,
)
from libai_vit.engine.training_checkpoint import (
    CheckpointError,
    ReliableCheckpointer,
    select_resumable,
)
from libai_vit.pretrained import PretrainedError

logger = logging.getLogger("libai_vit.train_net")


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    # the file itself was read before launch (tools/check_config.py); here its load reports problems
    validate(cfg, flow.env.get_world_size(), read_pretrained=False)
    depth = int(try_get_key(cfg, "model.depth", default=None) or cfg.model.cfg.depth)
    parallel.hide_depth_from_libai(cfg.train.dist)  # default_setup builds LiBai's dist state
    default_setup(cfg, args)
    # LiBai sets up only its own "libai" logger: ours (skipped images, pretrained-load reports) too
    setup_logger(cfg.train.output_dir, distributed_rank=flow.env.get_rank(), name="libai_vit")
    parallel.setup(cfg.train.dist, depth)
    # one seed on every rank: global tensors need the same random stream everywhere
    flow.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        check_eval_only(cfg, args.resume)
        name = select_resumable(cfg.train.output_dir) if args.resume else None
        if args.resume and not name and not cfg.train.load_weight:
            raise ConfigError(
                f"--eval-only --resume: train.output_dir={cfg.train.output_dir} has no checkpoint "
                f"to evaluate; set train.load_weight=<checkpoint directory>"
            )
        model = Trainer.build_model(cfg)
        checkpointer = ReliableCheckpointer(model, save_dir=cfg.train.output_dir)
        checkpointer.load(
            os.path.join(cfg.train.output_dir, name) if name else cfg.train.load_weight,
            checkpointables=[],
        )
        if cfg.graph.enabled:
            model = Trainer.build_graph(cfg, model, is_train=False)
        return Trainer.test(cfg, Trainer.build_test_loader(cfg), model)
    return Trainer(cfg).train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    # LiBai's parser takes everything after the first key=value as overrides: accept flags there too
    for flag in ("--resume", "--eval-only"):
        if flag in args.opts:
            args.opts.remove(flag)
            setattr(args, flag[2:].replace("-", "_"), True)
    try:
        main(args)
    # refused before training
    except (ConfigError, parallel.LayoutError, PretrainedError, DatasetError) as e:
        if flow.env.get_rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    # the run stopped; the message says what is kept
    except (CheckpointError, NonFiniteLossError, DataLoaderError) as e:
        if flow.env.get_rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except RuntimeError as e:  # a loader worker's death is signalled wherever the rank is
        short = data_loader_failure(e)
        if short is None:
            raise
        print(f"error: {short}", file=sys.stderr)
        sys.exit(1)
