"""Collectives of decisions (every rank must call them): one picklable object from rank 0 to every
rank (rank 0 alone reads and writes shared files, decides, and tells the others), and the first
rank's error when every rank did its own part (a sharded save)."""

import numpy as np
import oneflow as flow


def broadcast_from_rank0(obj):
    """`obj` as rank 0 holds it, on every rank."""
    if flow.env.get_world_size() == 1:
        return obj
    from oneflow.framework.check_point_v2 import _broadcast_py_object

    return _broadcast_py_object(obj, 0)


def first_error(error):
    """The first rank's error message (str or None), on every rank: each rank passes its own."""
    if flow.env.get_world_size() == 1:
        return None if error is None else str(error)
    from oneflow.framework.check_point_v2 import _broadcast_py_object

    world = list(range(flow.env.get_world_size()))
    flags = flow.tensor([0 if error is None else 1], dtype=flow.int64).to_global(
        placement=flow.placement("cpu", world), sbp=flow.sbp.split(0)
    )
    failed = np.flatnonzero(flags.to_global(sbp=flow.sbp.broadcast).to_local().numpy())
    if not len(failed):
        return None
    message = _broadcast_py_object(str(error) if error is not None else None, int(failed[0]))
    return f"rank {int(failed[0])}: {message}"
