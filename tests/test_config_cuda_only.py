"""AMP and ZeRO asked for on a machine without CUDA are refused with one line (libai_vit.config)."""

import pytest

from libai_vit.config import ConfigError, check_cuda_only_features, load_config, validate_values

DEMO = "configs/demo_digits_3d.py"


@pytest.mark.parametrize("key", ["train.amp.enabled", "train.zero_optimization.enabled"])
def test_cuda_only_features_refused_without_cuda(key):
    cfg = load_config(DEMO, [f"{key}=True"])
    with pytest.raises(ConfigError, match=rf"^{key}=True needs CUDA GPUs .*: set .*False") as err:
        validate_values(cfg)  # this machine has no CUDA
    assert "\n" not in str(err.value)
    check_cuda_only_features(cfg, cuda_available=True)  # accepted where CUDA exists
    check_cuda_only_features(load_config(DEMO, []), cuda_available=False)
