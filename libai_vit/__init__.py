"""libai_vit: a 3D-parallel Vision Transformer for OneFlow/LiBai."""

from libai_vit import compat

compat.apply()

# our CPU kernels for OneFlow's ops: registered before any op runs (LIBAI_VIT_KERNELS=0: off)
from libai_vit import kernels  # noqa: E402

kernels.load()

from libai_vit.models.vision_transformer import VisionTransformer  # noqa: E402
from libai_vit.models.zoo import create_model, is_model, list_models  # noqa: E402

__all__ = ["VisionTransformer", "create_model", "is_model", "list_models"]
