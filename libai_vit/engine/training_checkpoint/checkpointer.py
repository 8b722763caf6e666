"""LiBai's Checkpointer with training checkpoints that are complete or invisible.

A checkpoint is a directory `model_XXXXXXX/` (the iteration that finished) holding LiBai's entries
(`model`, `graph` or `optimizer`, `lr_scheduler`, `model_ema`) and its manifest. Each entry is
sharded (`pretrained/sharded_format.py`: every rank writes the slices it holds, and any layout
reads the slices it needs) or, with `sharded=False`, whole (`flow.save(global_dst_rank=0)`:
gathered to rank 0, read by rank 0 and broadcast); both load. It is written under `.tmp-NAME/`,
published by one rename once every rank has finished writing, and only then named by
`last_checkpoint`. Assumes `output_dir` is one file system seen by every rank (as LiBai's --resume
already does).
"""

import errno
import logging
import os
import shutil
import time

import oneflow as flow
from libai.utils import distributed as dist
from libai.utils.checkpoint import Checkpointer
from omegaconf import OmegaConf

from libai_vit import parallel
from libai_vit.engine.atomic_files import fsync_dir, write_atomic
from libai_vit.engine.broadcast import broadcast_from_rank0, first_error
from libai_vit.engine.faults import fault
from libai_vit.engine.training_checkpoint.manifest import (
    MANIFEST,
    CheckpointError,
    verify,
    write_manifest,
)
from libai_vit.engine.training_checkpoint.nonfinite import nonfinite_entries
from libai_vit.engine.training_checkpoint.resume import LAST, PERIODIC
from libai_vit.pretrained import sharded_format as shards

logger = logging.getLogger(__name__)


def _note_relayout(path, saved):
    """Log when a checkpoint is loaded on another layout than the one its manifest records."""
    keys = ("data_parallel_size", "tensor_parallel_size", "pipeline_parallel_size")
    now = parallel.current_layout()
    if saved and tuple(saved[k] for k in keys) != tuple(getattr(now, k) for k in keys):
        logger.info(
            f"checkpoint {path} was written at DP x TP x PP = "
            f"{' x '.join(str(saved[k]) for k in keys)}; loading it at "
            f"{' x '.join(str(getattr(now, k)) for k in keys)}: each rank reads the slices of "
            f"this layout"
        )


class ReliableCheckpointer(Checkpointer):
    """LiBai's Checkpointer with atomic, verified saves; `config` is recorded in each manifest."""

    def __init__(
        self, model, save_dir="", *, config=None, layout=None, sharded=True, **checkpointables
    ):
        super().__init__(model, save_dir, **checkpointables)
        self.config = config
        self.layout = layout or {}
        self.sharded = sharded
        self._wanted = None  # the entries the current load() restores (None: all)

    def _write(self, obj, path, first, name):
        if self.sharded:
            shards.save(obj, path)
        else:
            flow.save(obj, path, global_dst_rank=0)  # collective: every rank takes part
        full_disk = fault("save_enospc")
        if first and dist.is_main_process() and full_disk in ("", name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    def save(self, name, **kwargs):
        kwargs.pop("iteration", None)
        m = PERIODIC.match(name)
        iteration = int(m.group(1)) if m else None
        bad = nonfinite_entries(self.model)
        if bad:
            raise CheckpointError(
                f"not saving checkpoint {name}: the model holds NaN/Inf in {', '.join(bad[:5])}"
            )
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        final = os.path.join(self.save_dir, name)
        tmp = os.path.join(self.save_dir, f".tmp-{name}")
        if dist.is_main_process():
            for stale in os.listdir(self.save_dir):  # left by a run killed while saving
                if stale.startswith((".tmp-", ".old-")):
                    shutil.rmtree(os.path.join(self.save_dir, stale), ignore_errors=True)
            os.makedirs(tmp)
            if self.sharded:
                for key in data:
                    os.makedirs(os.path.join(tmp, key))
        if self.sharded:
            dist.synchronize()  # every rank writes into the folders rank 0 made
        self.logger.info(f"Saving checkpoint to {final}")
        error = None
        for i, (key, value) in enumerate(data.items()):
            try:
                self._write(value, os.path.join(tmp, key), i == 0, name)
            except OSError as e:  # keep taking part in the collectives; report once below
                error = error or e
        if self.sharded:  # every rank wrote its own files: any rank's error fails the save
            error = first_error(error)
        delay = fault("save_sleep")
        if delay:
            time.sleep(float(delay))
        if dist.is_main_process() and error is None:
            try:
                self._publish(tmp, final, name, iteration)
            except Exception as e:  # noqa: BLE001  (the other ranks wait for the verdict below)
                error = e
        if dist.is_main_process() and error is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        error = broadcast_from_rank0(str(error) if error else None)
        if error:
            last = self.get_checkpoint_file()
            raise CheckpointError(
                f"saving checkpoint {final} failed: {error}; the last good checkpoint "
                f"{last or '(none)'} is intact"
            )
        dist.synchronize()

    def _publish(self, tmp, final, name, iteration):
        write_manifest(
            tmp,
            iteration=iteration,
            name=name,
            world_size=flow.env.get_world_size(),
            layout=self.layout,
            config=OmegaConf.to_container(self.config) if self.config is not None else None,
        )
        if os.path.exists(final):  # the same iteration saved again after a fallback
            os.rename(final, os.path.join(self.save_dir, f".old-{name}"))
        os.rename(tmp, final)
        fsync_dir(self.save_dir)
        shutil.rmtree(os.path.join(self.save_dir, f".old-{name}"), ignore_errors=True)
        if iteration is not None:  # model_best is not a point to resume from
            write_atomic(os.path.join(self.save_dir, LAST), name)

    def load(self, path, checkpointables=None):
        # LiBai restores only the states a checkpoint has: resuming a graph-mode checkpoint in eager
        # mode (or the reverse) would silently start with a fresh optimizer
        if checkpointables is None and path and os.path.isdir(path):
            missing = [k for k in self.checkpointables if not os.path.exists(os.path.join(path, k))]
            if missing:
                mode = "graph" if os.path.exists(os.path.join(path, "graph")) else "eager"
                raise CheckpointError(
                    f"checkpoint {path} has no {', '.join(missing)} state: it was written in "
                    f"{mode} mode; resume with graph.enabled={mode == 'graph'}, or start from its "
                    f"weights with train.load_weight={path}"
                )
        self._wanted = None if checkpointables is None else {"model", *checkpointables}
        try:
            return super().load(path, checkpointables)
        finally:
            self._wanted = None

    def _template_of(self, key):
        """For entry `key`: structure -> ((path, shape) -> (the live global tensor whose placement
        and SBP a loaded tensor takes, or None; whether the loaded tensor is its own state: the
        parameters and buffers of the model, the graph's modules and the EMA are filled in
        place))."""
        obj = self.model if key == "model" else self.checkpointables.get(key)

        def template_of(structure):
            live = {}
            for path, t in shards.tensors(obj.state_dict() if obj is not None else {}):
                live[path] = live[(".".join(map(str, path)),)] = t
            by_index = {}  # an eager optimizer's state is keyed by the parameter's index
            if isinstance(obj, flow.optim.Optimizer):
                saved = (i for g in structure["param_groups"] for i in g["params"])
                params = (p for g in obj.param_groups for p in g.parameters)
                by_index = dict(zip(saved, params))

            def template(path, shape):
                t, own = live.get(path), True
                if t is None and len(path) == 1 and "-" in str(path[0]):
                    t, own = live.get((path[0].rsplit("-", 1)[0],)), False  # nn.Graph's PARAM-m
                if t is None and len(path) > 2 and path[0] == "state":
                    t, own = by_index.get(path[1]), False
                fits = t is not None and t.is_global and tuple(t.shape) == tuple(shape)
                return (t, own) if fits else (None, False)

            return template

        return template_of

    def _load_file(self, f):
        """Verify the manifest (when there is one: converted checkpoints have none), then load."""
        has_manifest = os.path.exists(os.path.join(f, MANIFEST))
        checked = None
        if dist.is_main_process():
            try:
                manifest = verify(f) if has_manifest else {}
                checked = ("ok", manifest.get("iteration"))
                _note_relayout(f, manifest.get("layout"))
                if not has_manifest and not os.path.isdir(f):
                    checked = ("error", f"checkpoint {f} does not exist or is not a directory")
            except CheckpointError as e:
                checked = ("error", str(e))
        status, iteration = broadcast_from_rank0(checked)
        if status == "error":
            raise CheckpointError(iteration)
        data = {}
        for key in sorted(os.listdir(f)):
            if key == MANIFEST or (self._wanted is not None and key not in self._wanted):
                continue
            entry = os.path.join(f, key)
            try:
                if shards.is_sharded(entry):
                    data[key] = shards.load(entry, self._template_of(key))
                else:
                    data[key] = flow.load(entry, global_src_rank=0)
            except Exception as e:  # noqa: BLE001  (OneFlow raises many kinds; name the file)
                raise CheckpointError(
                    f"checkpoint entry {os.path.join(f, key)} cannot be loaded: "
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None
        if iteration is None:
            m = PERIODIC.match(os.path.basename(os.path.normpath(f)))
            iteration = int(m.group(1)) if m else 0
        data["iter"] = iteration
        return data
