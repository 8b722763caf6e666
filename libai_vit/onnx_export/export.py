"""A model in eval mode (1x1x1 layout, math attention) to one self-contained ONNX file.

The model is traced as an nn.Graph and converted by oneflow-onnx. OneFlow graphs are static, so
the converter bakes the traced batch size into Reshape/Expand shapes and Slice bounds: the model is
converted at two batch sizes, every integer constant that differs between them is linear in the
batch (a + b * batch), and in the file it is computed from the input's batch dimension instead. The
file's metadata holds what a server needs beside it: input/output names and layout, the
preprocessing, the class names.
"""

import json
import os
import tempfile

import numpy as np
import oneflow as flow

from libai_vit import parallel
from libai_vit.onnx_export.extra import OnnxExportError, require

INPUT, OUTPUT = "images", "logits"
TRACE_BATCHES = (2, 3)  # two sizes > 1: a broadcast over a batch of 1 would hide the batch
OPSETS = range(11, 18)  # converted and checked against onnxruntime (tests/test_onnx_export.py)
DEFAULT_OPSET = 13


class _EvalGraph(flow.nn.Graph):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def build(self, images):
        return self.model(images)["prediction_scores"]


def export_onnx(model, path, preprocessing, opset=DEFAULT_OPSET, class_names=None, name=""):
    """Write `model` (eval mode, math attention) to `path`. `preprocessing`: the description of the
    eval transform (`libai_vit.inference.describe_preprocessing`); `name` says what was exported."""
    (onnx,) = require("onnx")
    if opset not in OPSETS:
        raise OnnxExportError(f"--opset {opset}: supported are {OPSETS.start}..{OPSETS.stop - 1}")
    if model.training:
        raise OnnxExportError("the model is in training mode: export model.eval()")
    img_size = tuple(model.patch_embed.img_size)
    if tuple(preprocessing["crop"]) != img_size:
        raise OnnxExportError(
            f"the preprocessing gives {preprocessing['crop']} images, the model takes {img_size}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        reference, traced = (
            _convert(model, batch, opset, os.path.join(tmp, str(batch))) for batch in TRACE_BATCHES
        )
        _refuse_unconverted_ops(traced, name or type(model).__name__)
        _free_the_batch(reference, traced)
    traced.producer_name = "libai_vit"
    metadata = {
        "input_name": INPUT,
        "input_layout": "NCHW float32 RGB, preprocessed as in 'preprocessing'",
        "output_name": OUTPUT,
        "output": f"{OUTPUT} (N, {model.num_classes}); softmax gives class probabilities"
        if model.num_classes
        else f"{OUTPUT}: the pooled features (N, {model.embed_dim}); the model has no head",
        "preprocessing": json.dumps(preprocessing),
        "model": name,
    }
    if class_names is not None:
        metadata["class_names"] = json.dumps(list(class_names))
    onnx.helper.set_model_props(traced, metadata)
    onnx.checker.check_model(traced)
    onnx.save(traced, path)


def _convert(model, batch, opset, work_dir):
    """The ONNX model of `model` traced at `batch` images."""
    require("oneflow_onnx")
    from oneflow_onnx.oneflow2onnx.flow2onnx import Export

    import libai_vit.onnx_export.converter_ops  # noqa: F401  (registers the ops the converter lacks)

    (onnx,) = require("onnx")
    graph = _EvalGraph(model)
    images = flow.zeros(
        batch,
        model.patch_embed.proj.in_channels,
        *model.patch_embed.img_size,
        placement=parallel.placement(parallel.FIRST),
        sbp=parallel.broadcast_sbp(),
    )
    graph(images)  # traces and compiles
    weights, out = os.path.join(work_dir, "weights"), os.path.join(work_dir, "model.onnx")
    flow.save(graph.state_dict(), weights, global_dst_rank=0)
    Export(graph, weights, out, opset=opset)
    return onnx.load(out)


def _refuse_unconverted_ops(model_proto, name):
    """oneflow-onnx only logs the ops it cannot convert and leaves them in the file: refuse them."""
    (onnx,) = require("onnx")
    missing = sorted({n.op_type for n in model_proto.graph.node if not onnx.defs.has(n.op_type)})
    if missing:
        raise OnnxExportError(
            f"{name} cannot be exported: oneflow-onnx 0.6.2 has no conversion for the OneFlow "
            f"op(s) {', '.join(missing)}"
        )


def _free_the_batch(reference, traced):
    """Make `traced`'s batch dimension free, in place: its integer constants that differ from
    `reference`'s (the same graph at another batch size) become a + b * batch, batch read from the
    input's shape; the input and output get a named batch dimension."""
    from onnx import helper, numpy_helper

    pairs = _pair_nodes(reference.graph.node, traced.graph.node)
    ref_values = {i.name: numpy_helper.to_array(i) for i in reference.graph.initializer}
    values = {i.name: numpy_helper.to_array(i) for i in traced.graph.initializer}
    (b0, b1), graph = TRACE_BATCHES, traced.graph
    image = graph.input[0].name
    new_nodes, by_rule = [], {}

    def batch_rule(slope, offset):
        key = (tuple(slope), tuple(offset))
        if key not in by_rule:
            if not new_nodes:
                new_nodes.append(helper.make_node("Shape", [image], ["batch/shape"]))
                for tensor, value in (("batch/0", [0]), ("batch/1", [1])):
                    graph.initializer.append(numpy_helper.from_array(np.array(value), tensor))
                new_nodes.append(
                    helper.make_node("Slice", ["batch/shape", "batch/0", "batch/1"], ["batch"])
                )
            i = len(by_rule)
            for tensor, value in ((f"batch/slope{i}", slope), (f"batch/offset{i}", offset)):
                graph.initializer.append(numpy_helper.from_array(value, tensor))
            new_nodes.append(helper.make_node("Mul", ["batch", f"batch/slope{i}"], [f"batch/m{i}"]))
            new_nodes.append(
                helper.make_node("Add", [f"batch/m{i}", f"batch/offset{i}"], [f"batch/shape{i}"])
            )
            by_rule[key] = f"batch/shape{i}"
        return by_rule[key]

    for ref_node, node in pairs:
        for k, (ref_input, name) in enumerate(zip(ref_node.input, node.input)):
            if name not in values or ref_input not in ref_values:
                continue
            ref_value, value = ref_values[ref_input], values[name]
            if ref_value.shape != value.shape:
                raise OnnxExportError(f"{node.name}: a constant's shape depends on the batch size")
            if value.dtype.kind != "i" or np.array_equal(ref_value, value):
                continue
            slope = (value - ref_value) // (b1 - b0)
            node.input[k] = batch_rule(slope, value - slope * b1)
    for n in reversed(new_nodes):
        graph.node.insert(0, n)
    for value_info in (graph.input[0], graph.output[0]):
        value_info.type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.value_info[:]  # shapes inferred at the traced batch size would contradict others
    used = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name not in used]  # the replaced batch constants
    for initializer in unused:
        graph.initializer.remove(initializer)
    _rename(graph, {graph.input[0].name: INPUT, graph.output[0].name: OUTPUT})


def _pair_nodes(reference_nodes, nodes):
    """The same node in the two conversions: by name (OneFlow's op names do not depend on the
    batch), else, for the nodes the converter added under a running-counter name, in order per op
    type."""
    by_name = {n.name: n for n in reference_nodes}
    pairs, unnamed, ref_unnamed = [], {}, {}
    for node in nodes:
        if node.name in by_name:
            pairs.append((by_name.pop(node.name), node))
        else:
            unnamed.setdefault(node.op_type, []).append(node)
    for node in by_name.values():
        ref_unnamed.setdefault(node.op_type, []).append(node)
    if {k: len(v) for k, v in unnamed.items()} != {k: len(v) for k, v in ref_unnamed.items()}:
        raise OnnxExportError("the converted graph's structure depends on the batch size")
    for op_type, group in unnamed.items():
        pairs.extend(zip(ref_unnamed[op_type], group))
    return pairs


def _rename(graph, names):
    for value_info in list(graph.input) + list(graph.output):
        value_info.name = names.get(value_info.name, value_info.name)
    for node in graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
