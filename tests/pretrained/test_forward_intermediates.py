"""forward_intermediates equals real timm's on the same weights (1x1x1), every family and call
of generators/make_timm_intermediates.py; TP=2 and PP=2 in test_parallel_oracle.py."""

import pytest
from intermediates_oracle import CASES, max_diff
from timm_oracle import TOL


@pytest.mark.parametrize("case", CASES)
def test_forward_intermediates_match_timm(case):
    diff, wrong = max_diff(case)
    assert not wrong, f"{case}: outputs missing, extra or of another shape: {wrong}"
    print(f"{case}: max |ours - timm| = {diff:.3g}")
    assert diff < TOL, f"{case}: max |ours - timm| = {diff:.3g}"
