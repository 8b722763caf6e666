"""Train (or evaluate) a ViT with LiBai's engine; launched by tools/train.sh.

    bash tools/train.sh tools/train_net.py CONFIG NPROC [key=value ...] [--resume] [--eval-only]
"""
import logging
import os
import random
import select
import signal
import sys


def _bounded_join():
    """OneFlow's start-up (at `import oneflow`) waits for every rank of every node, forever and holding
    the GIL (a node never started: measured, no Python thread runs). A forked watchdog ends this rank
    with one line if the import has not returned after LIBAI_VIT_JOIN_TIMEOUT seconds (default 600)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return lambda: None
    seconds = float(os.environ.get("LIBAI_VIT_JOIN_TIMEOUT", "600"))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        speaker = os.environ.get("LOCAL_RANK", "0") == "0"  # one line per node
        # the others go first: a rank outliving its node's first one dies in a glog stack trace
        if not select.select([read_end], [], [], seconds + (0 if speaker else 1))[0]:  # closed: imported
            if speaker:
                print(f"error: not all {os.environ['WORLD_SIZE']} ranks joined within {seconds:g} s: start every "
                      f"node with the same NODE, ADDR and PORT and its own NODE_RANK", file=sys.stderr, flush=True)
                select.select([read_end], [], [], 2)
            os.kill(os.getppid(), signal.SIGKILL)
        os._exit(0)
    os.close(read_end)
    return lambda: (os.close(write_end), os.waitpid(pid, 0))


_joined = _bounded_join()
import numpy as np  # noqa: E402
import oneflow as flow  # noqa: E402

_joined()

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
import libai_vit  # noqa: F401,E402  (applies the LiBai 0.1.1 compatibility fixes)
from libai.config import default_argument_parser, try_get_key  # noqa: E402
from libai.engine import default_setup  # noqa: E402
from libai.utils.logger import setup_logger  # noqa: E402

from libai_vit import parallel  # noqa: E402
from libai_vit.config import ConfigError, load_config, validate_values  # noqa: E402
from libai_vit.engine.checkpoint import CheckpointError, ReliableCheckpointer, select_resumable  # noqa: E402
from libai_vit.engine.trainer import NonFiniteLossError, Trainer  # noqa: E402

logger = logging.getLogger("libai_vit.train_net")


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    validate_values(cfg)
    parallel.validate(cfg, flow.env.get_world_size())
    depth = int(try_get_key(cfg, "model.depth", default=None) or cfg.model.cfg.depth)
    # LiBai 0.1.1 splits layers evenly only; parallel.setup installs the real per-layer stages
    cfg.train.dist.pipeline_num_layers = int(cfg.train.dist.pipeline_parallel_size)
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
        model = Trainer.build_model(cfg)
        checkpointer = ReliableCheckpointer(model, save_dir=cfg.train.output_dir)
        name = select_resumable(cfg.train.output_dir) if args.resume else None
        checkpointer.load(os.path.join(cfg.train.output_dir, name) if name else cfg.train.load_weight,
                          checkpointables=[])
        if cfg.graph.enabled:
            model = Trainer.build_graph(cfg, model, is_train=False)
        return Trainer.test(cfg, Trainer.build_test_loader(cfg), model)
    return Trainer(cfg).train()


def _die_with_launcher():
    """If the launcher is killed (even with -9), this rank dies too instead of training on alone."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before prctl took effect
        sys.exit(1)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    # LiBai's parser takes everything after the first key=value as overrides: accept the flags there too
    for flag in ("--resume", "--eval-only"):
        if flag in args.opts:
            args.opts.remove(flag)
            setattr(args, flag[2:].replace("-", "_"), True)
    _die_with_launcher()
    try:
        main(args)
    except (ConfigError, parallel.LayoutError) as e:  # refused before training
        if flow.env.get_rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (CheckpointError, NonFiniteLossError) as e:  # the run stopped; the message says what is kept
        if flow.env.get_rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
