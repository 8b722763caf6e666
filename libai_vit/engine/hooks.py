"""Training hooks beyond LiBai's: loss/accuracy curves, checkpoint rotation, restartable random
streams, the model EMA's update, and a quieter OneFlow VM scheduler on CPU."""

import json
import logging
import os
import shutil
import zlib

from libai.engine.hooks import PeriodicCheckpointer
from libai.engine.trainer import HookBase
from libai.utils import distributed as dist

from libai_vit.engine.training_checkpoint import periodic_checkpoints
from libai_vit.vm_scheduler import MIN_WINDOW_S, SpinningSchedulerWatch

logger = logging.getLogger(__name__)


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(metrics_path, png_path):
    """Loss per iteration and top-1 at each evaluation, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    loss = [(r["iteration"], r["total_loss"]) for r in rows if "total_loss" in r]
    acc = [(r["iteration"], r["Acc@1"]) for r in rows if "Acc@1" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if loss:
        ax.plot(*zip(*loss), color="tab:blue", lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss", color="tab:blue")
    if acc:
        ax2 = ax.twinx()
        ax2.plot(*zip(*acc), "o-", color="tab:red")
        ax2.set_ylabel("top-1 (%)", color="tab:red")
    fig.tight_layout()
    tmp = png_path + ".tmp"  # whole or absent: a full disk leaves the previous PNG, not half of one
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, png_path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


class CurvePlotter(HookBase):
    """After training (main process), writes `curves.png` beside metrics.json."""

    def __init__(self, output_dir):
        self.output_dir = output_dir

    def after_train(self):
        metrics = os.path.join(self.output_dir, "metrics.json")
        if os.path.exists(metrics):
            png = os.path.join(self.output_dir, "curves.png")
            try:
                plot_curves(metrics, png)
            except OSError as e:  # the run itself is done and saved: say so, do not fail it
                logger.warning(f"could not write {png} ({e}); metrics.json holds the same numbers")


class RandomStreams(HookBase):
    """Every random stream restarts from (seed, iteration) at each checkpoint boundary.

    OneFlow 0.9's `Generator.get_state/set_state` do not round-trip on CPU (a restored state draws
    other numbers), and nn.Graph seeds each random op once, when it compiles. So instead of saving
    states, the streams are a function of the iteration: at the start and at every multiple of
    `period` (where checkpoints are written) the generators are reseeded and, in graph mode, the
    train graph is rebuilt to recompile with them. A run resumed at a checkpoint then draws exactly
    what the uninterrupted run drew.
    """

    def __init__(self, period, seed):
        self.period = int(period)
        self.seed = int(seed)

    def before_train(self):
        restart_random_streams(self.trainer.model, self.seed, self.trainer.start_iter)

    def before_step(self):
        it = self.trainer.iter
        if it != self.trainer.start_iter and it % self.period == 0:
            restart_random_streams(self.trainer.model, self.seed, it)
            self.trainer.restart_compiled_randomness()


def restart_random_streams(model, seed, iteration):
    import random

    import numpy as np
    import oneflow as flow

    from libai_vit import parallel

    def derived(*key):
        return int(np.random.SeedSequence([seed, iteration, *key]).generate_state(1)[0])

    flow.manual_seed(derived(0))  # drop path, flow.rand: the same on every rank (global tensors)
    generator_type = type(flow.default_generator)
    for name, module in model.named_modules():  # nn.Dropout owns a generator per module
        gen = getattr(module, "generator", None)
        if isinstance(gen, generator_type):
            gen.manual_seed(derived(1, zlib.crc32(name.encode())))
    # host-side augmentation: each data-parallel rank its own stream
    np.random.seed(derived(2, parallel.data_parallel_rank()))
    random.seed(derived(3, parallel.data_parallel_rank()))


class Checkpointing(PeriodicCheckpointer):
    """LiBai's periodic checkpoint hook, but every save (the last one too) is `model_XXXXXXX`, so it
    can be resumed (the last is also saved as `model_final`), and the newest `max_to_keep` are kept
    on disk: counted from the directory, not from this process's memory, so restarts do not leak
    old checkpoints."""

    def step(self, iteration, **kwargs):
        if (iteration + 1) % self.period and iteration < self.max_iter - 1:
            return
        self.checkpointer.save(f"{self.file_prefix}_{iteration:07d}")
        # LiBai's name for the trained model, which tools look for
        if iteration >= self.max_iter - 1:
            self.checkpointer.save(f"{self.file_prefix}_final")
        if self.max_to_keep and dist.is_main_process():
            for _, path in periodic_checkpoints(self.checkpointer.save_dir)[self.max_to_keep :]:
                shutil.rmtree(path, ignore_errors=True)


class ModelEmaUpdate(HookBase):
    """Updates the model EMA after each optimizer step, with the step's number (1, 2, ...) as timm's
    train.py does; the number follows from the iteration, so a resumed run continues it exactly."""

    def __init__(self, model_ema, iterations_per_update=1):
        self.model_ema = model_ema
        self.per_update = int(iterations_per_update)

    def after_step(self):
        done = self.trainer.iter + 1
        if done % self.per_update == 0:
            self.model_ema.update(self.trainer.model, done // self.per_update)


class QuietVMScheduler(HookBase):
    """Measures the steps after the first (which compiles the graph), at least MIN_WINDOW_S of them,
    and lowers OneFlow's spinning VM scheduler thread to nice 19 (see vm_scheduler.py), once."""

    def __init__(self):
        self._watch = SpinningSchedulerWatch()
        self._state = "waiting"

    def before_step(self):
        if self._state == "waiting" and self.trainer.iter > self.trainer.start_iter:
            self._state = "measuring"
            self._watch.start()

    def after_step(self):
        last = self.trainer.iter + 1 >= self.trainer.max_iter
        if self._state == "measuring" and (self._watch.elapsed() >= MIN_WINDOW_S or last):
            self._state = "done"
            self._watch.lower()
