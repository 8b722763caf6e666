"""Classify with an exported ONNX file through onnxruntime: everything comes from the file (its
metadata names the input and holds the preprocessing and class names), as a server would use it.
The preprocessing is repeated with PIL and numpy only, from the description
`libai_vit.inference.describe_preprocessing` wrote."""

import json
import os

import numpy as np
from PIL import Image

from libai_vit.onnx_export.extra import OnnxExportError, require


class OnnxClassifier:
    def __init__(self, path):
        (ort,) = require("onnxruntime")
        if not os.path.isfile(path):
            raise OnnxExportError(f"{path}: no such ONNX file")
        try:
            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  (onnxruntime raises its own types for a bad file)
            raise OnnxExportError(f"{path}: not a readable ONNX model ({str(e)[:200]})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "preprocessing" not in metadata:
            raise OnnxExportError(
                f"{path}: no preprocessing in its metadata: export it with tools/export_onnx.py"
            )
        self.input_name = metadata["input_name"]
        self.preprocessing = json.loads(metadata["preprocessing"])
        names = metadata.get("class_names")
        self.class_names = json.loads(names) if names else None

    def preprocess(self, image):
        """A PIL RGB image as the model's (3, H, W) float32 input."""
        p = self.preprocessing
        resample = getattr(Image, p["interpolation"].upper())
        if isinstance(p["resize"], int):  # the short side, the aspect ratio kept (as flowvision)
            w, h = image.size
            if min(w, h) != p["resize"]:
                scale = p["resize"] / min(w, h)
                size = (p["resize"], int(scale * h)) if w < h else (int(scale * w), p["resize"])
                image = image.resize(size, resample)
        elif p["resize"] is not None:
            image = image.resize(tuple(p["resize"][::-1]), resample)
        (ch, cw), (w, h) = p["crop"], image.size
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        image = image.crop((left, top, left + cw, top + ch))
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        mean = np.asarray(p["mean"], np.float32)[:, None, None]
        std = np.asarray(p["std"], np.float32)[:, None, None]
        return (pixels - mean) / std

    def logits(self, batch):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]

    def predict(self, images):
        """Class probabilities (N, classes) of PIL RGB images."""
        logits = self.logits(np.stack([self.preprocess(img) for img in images]))
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return exp / exp.sum(axis=-1, keepdims=True)
