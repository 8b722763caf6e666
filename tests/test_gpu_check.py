"""tools/gpu_check.py on a machine without CUDA: nothing to check, exit 0."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_without_cuda_says_so_and_exits_0():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip().startswith("gpu_check: no CUDA device here, nothing to check")
