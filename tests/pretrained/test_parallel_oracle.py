"""timm checkpoints loaded into a tensor- or pipeline-parallel ViT (2 processes) give timm's outputs."""
import os
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)], ids=["TP2", "PP2"])
def test_two_process_layout_matches_timm(tp, pp):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.path.join(HERE, "..", "..")]))
    proc = subprocess.run(
        [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", "2", "--master_port",
         str(_free_port()), os.path.join(HERE, "parallel_oracle_worker.py"), str(tp), str(pp)],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "checked" in proc.stdout
