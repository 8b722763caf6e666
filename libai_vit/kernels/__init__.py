"""Vectorised CPU float32 kernels for OneFlow's own ops, registered above OneFlow's kernels.

OneFlow 0.9's CPU kernels for GELU and softmax call libm's erff/exp per element, and its CPU
LayerNorm kernels abort ("TODO"). The libraries built from csrc/ (by tools/setup.sh, through
build.py, into .kernels/) register kernels for the same ops - gelu, gelu_grad, fast_gelu,
fast_gelu_grad (family "gelu"); softmax, softmax_grad ("softmax"); layer_norm, layer_norm_grad,
layer_norm_param_grad ("layer_norm") - with OneFlow's kKernelPriorityOptimized, so eager ops and
nn.Graph pick them wherever the op runs on CPU in float32. `load()` runs once, when libai_vit is
imported: a library must be loaded before its ops first run (loading one later crashed OneFlow).

    LIBAI_VIT_KERNELS=0             OneFlow's own kernels only
    LIBAI_VIT_KERNELS=gelu,softmax  only these families (default: every one that is built)
    LIBAI_VIT_KERNELS_ISA=avx2      a narrower instruction set than the CPU's widest (avx512,
                                    avx2, generic), e.g. to compare them
"""

import ctypes
import logging
import os

from libai_vit.kernels.build import DEFAULT_OUT, FAMILIES, STAMP, source_digest

logger = logging.getLogger(__name__)
_active = ()
_isa = None
_loaded = False


def _wanted():
    setting = os.environ.get("LIBAI_VIT_KERNELS", "1").strip()
    if setting in ("", "1"):
        return FAMILIES
    if setting == "0":
        return ()
    names = tuple(n.strip() for n in setting.split(",") if n.strip())
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        raise ValueError(
            f"LIBAI_VIT_KERNELS={setting!r}: unknown kernel families {unknown}; use 0, 1 or a "
            f"comma-separated list of {', '.join(FAMILIES)}"
        )
    return tuple(f for f in FAMILIES if f in names)


def load(build_dir=DEFAULT_OUT):
    """Load the built libraries LIBAI_VIT_KERNELS asks for, once; log which are active."""
    global _active, _isa, _loaded
    if _loaded:
        return _active
    _loaded = True
    wanted = _wanted()
    if not wanted:
        logger.info("libai_vit kernels: off (LIBAI_VIT_KERNELS=0), OneFlow's own kernels")
        return _active
    import oneflow as flow

    stamp = os.path.join(build_dir, STAMP)
    built = os.path.isfile(stamp) and open(stamp).read().strip() == source_digest()
    paths = [os.path.join(build_dir, f"{family}.so") for family in wanted]
    if not built or not all(os.path.isfile(p) for p in paths):
        logger.info(
            "libai_vit kernels: none (not built for these sources: run tools/setup.sh), "
            "OneFlow's own kernels"
        )
        return _active
    for path in paths:
        flow.utils.load_library(path)
    _isa = ctypes.CDLL(paths[0]).libai_vit_kernels_isa
    _isa.restype = ctypes.c_char_p
    _isa = _isa().decode()
    _active = wanted
    logger.info("libai_vit kernels: %s (%s)", ", ".join(_active), _isa)
    return _active


def active():
    """The kernel families loaded in this process (empty before load() or when off)."""
    return _active


def isa():
    """The instruction set the loaded kernels run with, or None."""
    return _isa
