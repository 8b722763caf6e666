"""OneFlow ops oneflow-onnx 0.6.2 converts wrongly or not at all, as handlers in its registry.
Importing this module registers them (oneflow-onnx must be importable: see `extra.require`).

- broadcast_like: our CPU LayerNorm expands the row statistics with it (libai_vit.layers.norm);
  it becomes Expand to the runtime shape of `like`, so the batch size stays free.
- fast_gelu (GELU's tanh approximation, act_layer='gelu_tanh' of the SigLIP 2 models): the
  formula 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) in ONNX ops.
- reduce_sum from opset 13: ONNX moved ReduceSum's axes from an attribute to an input there; the
  converter still writes the attribute, which ONNX drops, and ReduceSum then sums everything.
"""

import numpy as np
import oneflow as flow
from oneflow_onnx import util
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


@flow_op("fast_gelu")
class FastGelu:
    @classmethod
    def Version_9(cls, ctx, node, **kwargs):
        (x,), (y,), dtypes = node.input_tensor_names, node.output_tensor_names, node.output_dtypes
        dtype = util.Onnx2NumpyDtype(dtypes[0])

        def op(op_type, *inputs, **out):
            return ctx.MakeNode(
                op_type, list(inputs), op_name_scope=node.name, dtypes=dtypes, **out
            )

        def const(name, value):
            return _const(ctx, name, np.array(value, dtype))

        cube = op("Mul", x, op("Mul", x, x).output_tensor_names[0]).output_tensor_names[0]
        inner = op("Add", x, op("Mul", cube, const("kappa", 0.044715)).output_tensor_names[0])
        scaled = op("Mul", inner.output_tensor_names[0], const("beta", np.sqrt(2 / np.pi)))
        tanh = op("Tanh", scaled.output_tensor_names[0])
        one_plus = op("Add", tanh.output_tensor_names[0], const("one", 1.0))
        half_x = op("Mul", x, const("half", 0.5))
        ctx.RemoveNode(node.name)
        op("Mul", half_x.output_tensor_names[0], one_plus.output_tensor_names[0], outputs=[y])


@flow_op("reduce_sum", onnx_op="ReduceSum")
class ReduceSumAxesInput:
    @classmethod
    def Version_13(cls, ctx, node, **kwargs):
        ReduceOpBase.Version_1(ctx, node, **kwargs)  # the axes, made non-negative
        axes = node.attrs.pop("axes", None)
        if axes is not None:
            node.input_tensor_names.append(_const(ctx, "axes", np.array(axes, np.int64)))
