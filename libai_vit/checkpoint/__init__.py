"""Pretrained weights from timm / DeiT / MAE (.safetensors, .pth, .bin) and official JAX (.npz) ViTs."""
from libai_vit.checkpoint.load import LoadReport, convert, load_pretrained, read
from libai_vit.checkpoint.torch_pickle import CheckpointError

__all__ = ["CheckpointError", "LoadReport", "convert", "load_pretrained", "read"]
