"""Pretrained weights: timm files of every family built here, the DeiT / DeiT III / MAE / DINOv2 /
OpenAI-OpenCLIP release formats (.safetensors, .pth, .bin), official JAX ViT .npz, and this
project's checkpoints; one key-mapping table per format beside its converter."""

from libai_vit.pretrained.load import LoadReport, convert, load_pretrained, read
from libai_vit.pretrained.torch_pickle import PretrainedError

__all__ = ["PretrainedError", "LoadReport", "convert", "load_pretrained", "read"]
