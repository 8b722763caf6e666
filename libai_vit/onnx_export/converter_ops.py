"""OneFlow ops oneflow-onnx 0.6.2 converts wrongly or not at all, as handlers in its registry.
Importing this module registers them (oneflow-onnx must be importable: see `extra.require`).

- broadcast_like: our CPU LayerNorm expands the row statistics with it (libai_vit.layers.norm);
  it becomes Expand to the runtime shape of `like`, so the batch size stays free.
- reduce_sum from opset 13: ONNX moved ReduceSum's axes from an attribute to an input there; the
  converter still writes the attribute, which ONNX drops, and ReduceSum then sums everything.
"""

import numpy as np
import oneflow as flow
from oneflow_onnx.oneflow2onnx.handler import flow_op
from oneflow_onnx.oneflow2onnx.handlers.reduce import ReduceOpBase


def _const(ctx, name, value):
    return ctx.MakeConst(flow._oneflow_internal.UniqueStr(name), value).output_tensor_names[0]


@flow_op("broadcast_like", onnx_op="Expand", flow_ibns=["x", "like"])
class BroadcastLike:
    @classmethod
    def Version_8(cls, ctx, node, **kwargs):
        shape = ctx.MakeNode("Shape", [node.input_tensor_names[1]], op_name_scope=node.name)
        node.input_tensor_names[1] = shape.output_tensor_names[0]


@flow_op("reduce_sum", onnx_op="ReduceSum")
class ReduceSumAxesInput:
    @classmethod
    def Version_13(cls, ctx, node, **kwargs):
        ReduceOpBase.Version_1(ctx, node, **kwargs)  # the axes, made non-negative
        axes = node.attrs.pop("axes", None)
        if axes is not None:
            node.input_tensor_names.append(_const(ctx, "axes", np.array(axes, np.int64)))
