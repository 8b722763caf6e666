"""One picklable object from rank 0 to every rank: rank 0 alone reads and writes files, decides, and
tells the others (every rank must call it, as with any collective)."""

import oneflow as flow


def broadcast_from_rank0(obj):
    """`obj` as rank 0 holds it, on every rank."""
    if flow.env.get_world_size() == 1:
        return obj
    from oneflow.framework.check_point_v2 import _broadcast_py_object

    return _broadcast_py_object(obj, 0)
