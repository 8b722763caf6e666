"""ONNX export of a trained ViT (tools/export_onnx.py) and classification with the exported file
through onnxruntime (tools/predict.py --onnx). Needs the optional extra: tools/setup.sh --onnx."""

from libai_vit.onnx_export.export import DEFAULT_OPSET, OPSETS, export_onnx
from libai_vit.onnx_export.extra import OnnxExportError
from libai_vit.onnx_export.runtime import OnnxClassifier

__all__ = ["DEFAULT_OPSET", "OPSETS", "OnnxClassifier", "OnnxExportError", "export_onnx"]
