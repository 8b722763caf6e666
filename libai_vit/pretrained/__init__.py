"""Pretrained weights from timm / DeiT / MAE (.safetensors, .pth, .bin) and official JAX (.npz) ViTs."""
from libai_vit.pretrained.load import LoadReport, convert, load_pretrained, read
from libai_vit.pretrained.torch_pickle import PretrainedError

__all__ = ["PretrainedError", "LoadReport", "convert", "load_pretrained", "read"]
