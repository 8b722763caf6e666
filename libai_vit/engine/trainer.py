"""LiBai's DefaultTrainer with this project's writers and hooks, verified checkpoints, exact resume,
a check for non-finite losses on every step, whole-model gradient clipping and a model EMA."""

import copy
import json
import logging
import math
import os

from libai.config import try_get_key
from libai.engine import DefaultTrainer
from libai.engine import hooks as libai_hooks
from libai.optim import build_optimizer
from libai.utils import distributed as dist
from libai.utils.events import CommonMetricPrinter, JSONWriter, get_event_storage

from libai_vit import vm_scheduler
from libai_vit.data.folder import DatasetError
from libai_vit.engine.atomic_files import write_atomic
from libai_vit.engine.broadcast import broadcast_from_rank0
from libai_vit.engine.ema import ModelEma
from libai_vit.engine.faults import fault
from libai_vit.engine.hooks import (
    Checkpointing,
    CurvePlotter,
    ModelEmaUpdate,
    QuietVMScheduler,
    RandomStreams,
)
from libai_vit.engine.training_checkpoint import (
    CheckpointError,
    ReliableCheckpointer,
    select_resumable,
)
from libai_vit.engine.training_checkpoint.manifest import MANIFEST
from libai_vit.optim.clip import clip_whole_model

logger = logging.getLogger(__name__)
# what defines a run's learning-rate schedule and batch: a resume whose config differs in any of
# them continues on the checkpoint's schedule (its saved lr scheduler), and says so
SCHEDULE_KEYS = (
    "train.train_iter",
    "train.warmup_iter",
    "optim.lr",
    "train.scheduler.warmup_factor",
    "train.scheduler.alpha",
    "train.scheduler.warmup_method",
    "train.global_batch_size",
)


def schedule_changes(saved_config, cfg):
    """The one line saying how `cfg`'s schedule-defining keys differ from those of the run that
    wrote a checkpoint (`saved_config`: its manifest's config), or None when none differs."""
    from omegaconf import OmegaConf

    saved = OmegaConf.create(saved_config or {})
    changed = []
    for key in SCHEDULE_KEYS:
        before, now = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        if before is not None and now is not None and before != now:
            changed.append(f"{key} {before} -> {now}")
    if not changed:
        return None
    batch = OmegaConf.select(cfg, "train.global_batch_size")
    return (
        f"the config's schedule differs from the checkpoint's ({', '.join(changed)}): the learning "
        f"rate continues on the checkpoint's schedule (its saved scheduler), the run stops after "
        f"train.train_iter={OmegaConf.select(cfg, 'train.train_iter')} steps with batches of "
        f"{batch}; for the new schedule start from its weights with train.load_weight=<it> instead "
        f"of --resume"
    )


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf and train.nonfinite_loss is "stop"; the message names the step."""


class DataLoaderError(RuntimeError):
    """A data-loader worker died (killed from outside, or by the out-of-memory killer)."""


class _SkippedStep(Exception):
    pass


def data_loader_failure(e):
    """The one-line form of a data-loader worker's failure, or None for any other exception: a
    worker's exception re-raised by OneFlow's DataLoader (its message then holds the worker's whole
    traceback), or a worker's death (raised by OneFlow's SIGCHLD handler wherever the main thread
    is, so tools/train_net.py converts it too)."""
    text = str(e)
    if isinstance(e, RuntimeError) and text.startswith("DataLoader worker"):
        return DataLoaderError(
            f"{text.strip().splitlines()[0].rstrip('.')} (killed from outside, or out of memory?):"
            f" lower dataloader.train.num_workers, then continue with --resume"
        )
    if isinstance(e, DatasetError) and "in DataLoader worker process" in text:
        return DatasetError(text.strip().splitlines()[-1].split(": ", 1)[-1])  # the worker's own
    return None


class _NoTracebackFor(logging.Filter):
    """LiBai logs every exception leaving the loop with its traceback; ours already say it all."""

    def filter(self, record):
        return not (
            record.exc_info
            and (
                isinstance(
                    record.exc_info[1],
                    (NonFiniteLossError, CheckpointError, DataLoaderError, DatasetError),
                )
                or data_loader_failure(record.exc_info[1]) is not None
            )
        )


logging.getLogger("libai.engine.trainer").addFilter(_NoTracebackFor())


class RawMetricsWriter(JSONWriter):
    """metrics.json with one row per write holding each scalar's raw value since the last write.

    LiBai's JSONWriter writes 20-step medians and keeps one "last written iteration" for all
    scalars: the `lr` it stores one iteration ahead makes it skip every following `total_loss` when
    `log_period=1`. Here each scalar is tracked on its own and written unsmoothed.

    Rows from `start_iter` on are dropped first: a killed run may have logged steps past the
    checkpoint it resumes from, and those steps are run (and logged) again.
    """

    def __init__(self, json_file, start_iter=0):
        if os.path.exists(json_file):
            with open(json_file) as f:
                rows = [line for line in f if line.strip()]
            kept = [r for r in rows if _row_iteration(r) < start_iter]
            if len(kept) != len(rows):
                write_atomic(json_file, "".join(kept))
        super().__init__(json_file)
        self._written = {}

    def write(self):
        storage = get_event_storage()
        row = {}
        for name, (value, itr) in storage.latest().items():
            if self._written.get(name, -1) < itr:
                row[name] = value
                self._written[name] = itr
        if row:
            row["iteration"] = storage.iter - 1  # the step that just finished
            self._file_handle.write(json.dumps(row, sort_keys=True) + "\n")
            self._file_handle.flush()

    def close(self):
        # LiBai's PeriodicWriter only closes writers after training, so the final evaluation
        # (run in EvalHook.after_train) would never be written
        self.write()
        super().close()


def _row_iteration(line):
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError):  # a row cut by the kill: the step is run again
        return math.inf


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        # LiBai's __init__ takes start_iter from the name in `last_checkpoint`; it must name a
        # checkpoint that verifies before then (the newest one, else the previous good one).
        self._resume_name = select_resumable(cfg.train.output_dir) if cfg.train.resume else None
        # building an optimizer edits its config in place
        self._optim_cfg = copy.deepcopy(cfg.optim)
        super().__init__(cfg)
        self._record_metrics = self._trainer.write_metrics
        self._trainer.write_metrics = self._checked_write_metrics

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        ac = cfg.train.activation_checkpoint
        if ac.enabled:  # LiBai's GraphBase marks only its own TransformerLayer
            model.set_grad_checkpointing(
                True, granularity=ac.get("granularity", "block"), every=ac.get("every", 1)
            )
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return clip_whole_model(build_optimizer(cfg.optim, model), graph=cfg.graph.enabled)

    def resume_or_load(self, resume=True):
        old = self.checkpointer
        ema_cfg = self.cfg.train.get("model_ema", None)
        self.model_ema = None
        if ema_cfg is not None and ema_cfg.enabled:
            self.model_ema = ModelEma(
                self.model, **{k: v for k, v in ema_cfg.items() if k != "enabled"}
            )
            old.checkpointables["model_ema"] = self.model_ema
        d = self.cfg.train.dist
        layout = {
            k: (list(d[k]) if k == "pipeline_stage_layers" and d[k] is not None else d[k])
            for k in (
                "data_parallel_size",
                "tensor_parallel_size",
                "pipeline_parallel_size",
                "pipeline_stage_layers",
            )
        }
        self.checkpointer = ReliableCheckpointer(
            old.model,
            old.save_dir,
            config=self.cfg,
            layout=layout,
            sharded=self.cfg.train.checkpointer.get("sharded", True),
            **old.checkpointables,
        )
        if resume and self._resume_name:
            path = os.path.join(self.cfg.train.output_dir, self._resume_name)
            if self.model_ema is not None and not os.path.exists(os.path.join(path, "model_ema")):
                raise CheckpointError(
                    f"checkpoint {path} has no model EMA (it was trained with train.model_ema."
                    f"enabled=False): resume without it, or start from its weights with "
                    f"train.load_weight={path}"
                )
            extra = self.checkpointer.load(path)
            self.start_iter = extra["iter"] + 1
            with open(os.path.join(path, MANIFEST)) as f:
                changes = schedule_changes(json.load(f).get("config"), self.cfg)
            if changes:
                logger.warning(f"resuming {path}: {changes}")
        else:
            self.checkpointer.load(self.cfg.train.load_weight, checkpointables=[])
            # the average starts from the weights training starts from
            if self.model_ema is not None:
                self.model_ema.set(self.model)
        if self.model_ema is not None and self.cfg.graph.enabled:
            self.graph_eval_ema = self.build_graph(self.cfg, self.model_ema.module, is_train=False)

    @classmethod
    def build_train_loader(cls, cfg, tokenizer=None):
        # LiBai sets cfg.dataloader.consumed_samples from start_iter, which no loader reads
        cfg.dataloader.train.consumed_samples = try_get_key(
            cfg, "dataloader.consumed_samples", default=0
        )
        return super().build_train_loader(cfg, tokenizer)

    def build_writers(self):
        return [
            CommonMetricPrinter(self.global_batch_size, self.max_iter),  # progress with ETA
            RawMetricsWriter(
                os.path.join(self.cfg.train.output_dir, "metrics.json"), self.start_iter
            ),
        ]

    def build_hooks(self):
        hooks = super().build_hooks()
        ck = self.cfg.train.checkpointer
        for i, hook in enumerate(hooks):
            if type(hook) is libai_hooks.PeriodicCheckpointer:
                hooks[i] = Checkpointing(
                    self.checkpointer, ck.period, max_to_keep=ck.get("max_to_keep", None)
                )
        hooks.insert(0, RandomStreams(ck.period, self.cfg.train.seed))
        if self.model_ema is not None:
            # eager LiBai steps the optimizer every num_accumulation_steps iterations; a graph
            # step is one update
            per_update = 1 if self.cfg.graph.enabled else self.cfg.train.num_accumulation_steps
            # before the evaluation and checkpoint hooks of the same iteration
            hooks.insert(1, ModelEmaUpdate(self.model_ema, per_update))
            for hook in hooks:
                if type(hook) is libai_hooks.EvalHook:
                    hook._func = self._evaluate_with_ema(hook._func)
        if vm_scheduler.wanted(self.cfg.graph.enabled):
            hooks.insert(0, QuietVMScheduler())
        if dist.is_main_process():
            hooks.append(CurvePlotter(self.cfg.train.output_dir))
        return hooks

    def _evaluate_with_ema(self, evaluate_model):
        """The model's metrics and the EMA's beside them (`Acc@1_ema`, ...), at every evaluation."""

        def evaluate():
            results = dict(evaluate_model())
            ema = self.graph_eval_ema if self.cfg.graph.enabled else self.model_ema.module
            logger.info("evaluating the model EMA (its metrics are logged as *_ema)")
            results.update(
                {f"{k}_ema": v for k, v in self.test(self.cfg, self.test_loader, ema).items()}
            )
            self._last_eval_results = results
            return results

        return evaluate

    def restart_compiled_randomness(self):
        """A compiled train graph keeps the random seeds it was built with: build it again, with a
        new optimizer and scheduler (OneFlow cannot trace one optimizer into a second graph),
        carrying the state over as a resume would."""
        if not self.cfg.graph.enabled:
            return
        graph_state, scheduler_state = self.graph_train.state_dict(), self.lr_scheduler.state_dict()
        for p in self.model.parameters():
            p.grad = None  # the first trace left lazy tensors there, which a second trace refuses
        self.optimizer = clip_whole_model(
            build_optimizer(copy.deepcopy(self._optim_cfg), self.model), graph=True
        )
        self.lr_scheduler = self.build_lr_scheduler(self.cfg, self.optimizer)
        self.lr_scheduler.load_state_dict(scheduler_state)
        self.graph_train = self.build_graph(
            self.cfg, self.model, self.optimizer, self.lr_scheduler, is_train=True
        )
        self.graph_train.load_state_dict(graph_state)
        self._trainer.graph = self.graph_train
        self.checkpointer.checkpointables.update(
            graph=self.graph_train, lr_scheduler=self.lr_scheduler
        )

    def run_step(self):
        self._trainer.iter = self.iter
        try:
            self._trainer.run_step(self._get_batch)
        except _SkippedStep:
            self.optimizer.zero_grad()  # eager: the update was not applied yet; drop its gradients
        except (RuntimeError, DatasetError) as e:
            short = data_loader_failure(e)
            if short is None:
                raise
            raise short from None

    def _get_batch(self, data, mixup_func=None):
        batch = self.get_batch(data, mixup_func)
        if fault("nan_loss") == str(self.iter):  # fault injection: LIBAI_VIT_FAULT=nan_loss=ITER
            batch["images"] = batch["images"] * float("nan")
        return batch

    def _checked_write_metrics(self, loss_dict, data_time, prefix=""):
        """Every rank learns whether the loss is finite (LiBai checks on rank 0 only, which hangs
        the others), before the step's metrics and checkpoint are written."""
        values = {
            k: dist.tton(v, local_only=False, ranks=[0] if v.placement.ranks.ndim == 1 else [[0]])
            for k, v in loss_dict.items()
        }
        total = broadcast_from_rank0(
            float(sum(values.values())) if dist.is_main_process() else None
        )
        if not math.isfinite(total):
            message = f"non-finite loss ({total}) at iteration {self.iter}"
            if self.cfg.train.get("nonfinite_loss", "stop") == "skip":
                logger.warning(f"{message}: step skipped (train.nonfinite_loss=skip)")
                raise _SkippedStep()
            raise NonFiniteLossError(
                f"{message}; training stopped before any checkpoint could hold it "
                f"(train.nonfinite_loss=stop): lower optim.lr or check the data, then resume with "
                f"--resume"
            )
        self._record_metrics(loss_dict, data_time, prefix)
