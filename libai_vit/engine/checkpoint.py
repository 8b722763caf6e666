"""Checkpoints that are complete or invisible: LiBai's Checkpointer, saved atomically and verified.

A checkpoint is a directory `model_XXXXXXX/` (the iteration that finished) holding LiBai's entries
(`model`, `graph` or `optimizer`, `lr_scheduler`: whole, unsharded tensors written by rank 0 with
`flow.save(global_dst_rank=0)`, so any layout can load them) and `manifest.json`: iteration, world
size, layout, the config, and every file's size and sha256. It is written under `.tmp-NAME/`,
published by one rename once every rank has finished writing, and only then named by
`last_checkpoint`. Resuming takes the newest checkpoint whose manifest verifies, falling back past
corrupt ones with a warning that names the file. Assumes `output_dir` is one file system seen by
every rank (as LiBai's --resume already does).

Fault injection for tests and drills (documented knob, comma-separated in LIBAI_VIT_FAULT):
  save_sleep=SECONDS   every rank sleeps after writing the data, before publishing (kill it then)
  save_enospc[=NAME]   rank 0's writer raises OSError(ENOSPC) after writing the first entry of
                       checkpoint NAME (every checkpoint when no NAME is given)
"""
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time

import oneflow as flow
from libai.utils import distributed as dist
from libai.utils.checkpoint import Checkpointer
from omegaconf import OmegaConf

from libai_vit import parallel

MANIFEST = "manifest.json"
LAST = "last_checkpoint"
PERIODIC = re.compile(r"^model_(\d{7})$")
FAULT_ENV = "LIBAI_VIT_FAULT"
logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the file and the cause."""


def fault(name):
    """The value of fault-injection knob `name` in $LIBAI_VIT_FAULT ("" if set without one), or None."""
    for item in os.environ.get(FAULT_ENV, "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == name:
            return value.strip()
    return None


def _broadcast(obj):
    """A picklable object from rank 0 to every rank (rank 0 alone reads/writes checkpoint files)."""
    if flow.env.get_world_size() == 1:
        return obj
    from oneflow.framework.check_point_v2 import _broadcast_py_object

    return _broadcast_py_object(obj, 0)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
        os.fsync(f.fileno())  # the data is on disk before the rename publishes it
    return h.hexdigest()


def _files(root):
    out = []
    for d, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return sorted(f for f in out if f != MANIFEST)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, text):
    """Replace `path` with `text` so that a reader sees the old or the new content, never a part."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def verify(path):
    """Check a checkpoint directory against its manifest; returns the manifest or raises CheckpointError."""
    manifest_file = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} does not exist or is not a directory")
    try:
        with open(manifest_file) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is incomplete: {manifest_file} is missing") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint manifest {manifest_file} is unreadable: {e}") from None
    for rel, (size, digest) in manifest["files"].items():
        f = os.path.join(path, rel)
        if not os.path.isfile(f):
            raise CheckpointError(f"checkpoint file {f} is missing")
        if os.path.getsize(f) != size:
            raise CheckpointError(f"checkpoint file {f} is truncated or altered: "
                                  f"{os.path.getsize(f)} bytes, the manifest says {size}")
        if _sha256(f) != digest:
            raise CheckpointError(f"checkpoint file {f} is corrupt: its sha256 differs from the manifest")
    return manifest


def periodic_checkpoints(save_dir):
    """(iteration, path) of the published periodic checkpoints, newest first."""
    found = []
    if os.path.isdir(save_dir):
        for name in os.listdir(save_dir):
            m = PERIODIC.match(name)
            if m and os.path.isdir(os.path.join(save_dir, name)):
                found.append((int(m.group(1)), os.path.join(save_dir, name)))
    return sorted(found, reverse=True)


def select_resumable(save_dir):
    """The newest checkpoint that verifies, on every rank; `last_checkpoint` is repointed to it.

    Returns its name, or None when `save_dir` has no checkpoint at all (a fresh start). Raises
    CheckpointError when checkpoints exist but none verifies.
    """
    result = None
    if dist.is_main_process():
        errors = []
        for _, path in periodic_checkpoints(save_dir):
            try:
                verify(path)
            except CheckpointError as e:
                errors.append(str(e))
                logger.warning(f"{e}; falling back to the previous checkpoint")
                continue
            result = ("ok", os.path.basename(path))
            break
        if result is None:
            result = ("error", "; ".join(errors)) if errors else ("none", None)
        if result[0] == "none" and os.path.exists(os.path.join(save_dir, LAST)):
            os.remove(os.path.join(save_dir, LAST))  # names a checkpoint that was never completed
        if result[0] == "ok":
            last = os.path.join(save_dir, LAST)
            if not os.path.exists(last) or open(last).read().strip() != result[1]:
                write_atomic(last, result[1])
    status, value = _broadcast(result)
    if status == "error":
        raise CheckpointError(f"no usable checkpoint in {save_dir} to resume from: {value}")
    return value


def _nonfinite_entries(model):
    """Names of model tensors holding NaN/Inf, on every rank (one small collective per tensor)."""
    sums = {}
    for name, v in model.state_dict().items():
        s = v.sum().to(flow.float64)
        sums[name] = dist.tton(s, local_only=False, ranks=[0] if s.placement.ranks.ndim == 1 else [[0]])
    bad = [n for n, s in sums.items() if not math.isfinite(float(s))] if dist.is_main_process() else None
    return _broadcast(bad)


def _note_relayout(path, saved):
    """Log when a checkpoint is loaded on another layout than the one its manifest records."""
    keys = ("data_parallel_size", "tensor_parallel_size", "pipeline_parallel_size")
    now = parallel.current_layout()
    if saved and tuple(saved[k] for k in keys) != tuple(getattr(now, k) for k in keys):
        logger.info(f"checkpoint {path} was written at DP x TP x PP = {' x '.join(str(saved[k]) for k in keys)}; "
                    f"loading it at {' x '.join(str(getattr(now, k)) for k in keys)}: its tensors are whole "
                    f"and are resharded to this layout")


class ReliableCheckpointer(Checkpointer):
    """LiBai's Checkpointer with atomic, verified saves; `config` is recorded in each manifest."""

    def __init__(self, model, save_dir="", *, config=None, layout=None, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.config = config
        self.layout = layout or {}

    def _write(self, obj, path, first, name):
        flow.save(obj, path, global_dst_rank=0)  # collective: every rank takes part
        full_disk = fault("save_enospc")
        if first and dist.is_main_process() and full_disk in ("", name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    def save(self, name, **kwargs):
        kwargs.pop("iteration", None)
        m = PERIODIC.match(name)
        iteration = int(m.group(1)) if m else None
        bad = _nonfinite_entries(self.model)
        if bad:
            raise CheckpointError(f"not saving checkpoint {name}: the model holds NaN/Inf in {', '.join(bad[:5])}")
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
        self.logger.info(f"Saving checkpoint to {final}")
        error = None
        for i, (key, value) in enumerate(data.items()):
            try:
                self._write(value, os.path.join(tmp, key), i == 0, name)
            except OSError as e:  # keep taking part in the collectives; report once below
                error = error or e
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
        error = _broadcast(str(error) if error else None)
        if error:
            last = self.get_checkpoint_file()
            raise CheckpointError(f"saving checkpoint {final} failed: {error}; the last good checkpoint "
                                  f"{last or '(none)'} is intact")
        dist.synchronize()

    def _publish(self, tmp, final, name, iteration):
        files = {rel: (os.path.getsize(os.path.join(tmp, rel)), _sha256(os.path.join(tmp, rel)))
                 for rel in _files(tmp)}
        manifest = dict(iteration=iteration, name=name, world_size=flow.env.get_world_size(),
                        layout=self.layout, files=files,
                        config=OmegaConf.to_container(self.config) if self.config is not None else None)
        write_atomic(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1, default=str))
        if os.path.exists(final):  # the same iteration saved again after a fallback
            os.rename(final, os.path.join(self.save_dir, f".old-{name}"))
        os.rename(tmp, final)
        _fsync_dir(self.save_dir)
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
                    f"checkpoint {path} has no {', '.join(missing)} state: it was written in {mode} mode; "
                    f"resume with graph.enabled={mode == 'graph'}, or start from its weights with "
                    f"train.load_weight={path}")
        return super().load(path, checkpointables)

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
        status, iteration = _broadcast(checked)
        if status == "error":
            raise CheckpointError(iteration)
        data = {}
        for key in sorted(os.listdir(f)):
            if key == MANIFEST:
                continue
            try:
                data[key] = flow.load(os.path.join(f, key), global_src_rank=0)
            except Exception as e:  # noqa: BLE001  (OneFlow raises many kinds; name the file)
                raise CheckpointError(f"checkpoint entry {os.path.join(f, key)} cannot be loaded: "
                                      f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        if iteration is None:
            m = PERIODIC.match(os.path.basename(os.path.normpath(f)))
            iteration = int(m.group(1)) if m else 0
        data["iter"] = iteration
        return data
