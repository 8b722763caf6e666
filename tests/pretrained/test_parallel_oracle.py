"""timm checkpoints loaded into a tensor- or pipeline-parallel ViT (2 processes) give timm's outputs."""
import os

import pytest

from conftest import launch_script

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)], ids=["TP2", "PP2"])
def test_two_process_layout_matches_timm(tp, pp):
    proc = launch_script(os.path.join(HERE, "parallel_oracle_worker.py"), 2, [tp, pp])
    assert "checked" in proc.stdout
