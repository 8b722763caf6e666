from libai_vit.data.data_config import create_eval_transform, resolve_data_config

__all__ = ["create_eval_transform", "resolve_data_config"]
