"""Choosing the training checkpoint to resume from: the newest periodic one whose manifest verifies,
falling back past corrupt ones with a warning that names the file."""

import logging
import os
import re

from libai.utils import distributed as dist

from libai_vit.engine.atomic_files import write_atomic
from libai_vit.engine.broadcast import broadcast_from_rank0
from libai_vit.engine.training_checkpoint.manifest import CheckpointError, verify

LAST = "last_checkpoint"
PERIODIC = re.compile(r"^model_(\d{7})$")
logger = logging.getLogger(__name__)


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
            # any bytes (a garbage file is repointed, not decoded)
            if not os.path.exists(last) or open(last, "rb").read().strip() != result[1].encode():
                write_atomic(last, result[1])
    status, value = broadcast_from_rank0(result)
    if status == "error":
        raise CheckpointError(f"no usable checkpoint in {save_dir} to resume from: {value}")
    return value
