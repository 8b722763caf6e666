"""tools/train.sh refuses a layout that does not fit the launched processes, in one line."""
from conftest import launch


def test_nproc_not_matching_the_layout_is_refused():
    proc = launch(["tools/train_net.py", "configs/demo_digits_3d.py"], 2, check=False)
    assert proc.returncode != 0
    assert "error: the layout DP x TP x PP = 2 x 2 x 2 = 8 processes, but 2 were launched" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_sh_usage_errors():
    proc = launch(["tools/train_net.py", "configs/missing.py"], 1, check=False)
    assert proc.returncode == 2 and "error: config configs/missing.py does not exist" in proc.stderr
