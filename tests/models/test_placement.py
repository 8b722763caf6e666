"""Where every parameter lives at 2x2x2 (and an uneven pipeline split), and that the same seed
gives the same weights on every layout."""

import json
import os

import numpy as np
import pytest

from conftest import launch_script

PROBE = os.path.join(os.path.dirname(__file__), "placement_probe.py")
STAGE0, STAGE1 = [[0, 1], [2, 3]], [[4, 5], [6, 7]]  # (DP, TP) meshes of the two stages
B, S0, S1 = "oneflow.sbp.broadcast", "oneflow.sbp.split(dim=0)", "oneflow.sbp.split(dim=1)"


def _probe(tmp_path, layout, split=None):
    out = tmp_path / f"probe_{'x'.join(map(str, layout))}.json"
    args = [*layout, out] + ([json.dumps(split)] if split else [])
    launch_script(PROBE, int(np.prod(layout)), args)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _probe(tmp_path_factory.mktemp("p1"), (1, 1, 1))


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return _probe(tmp_path_factory.mktemp("p8"), (2, 2, 2))


def _expected(name):
    """(stage mesh, SBP over (DP, TP)) that the rules in libai_vit.parallel give `name`."""
    if name.startswith("blocks."):
        mesh = STAGE0 if int(name.split(".")[1]) < 2 else STAGE1
        if "query_key_value" in name or "dense_h_to_4h" in name:  # column-parallel
            return mesh, [B, S1] if name.endswith("weight") else [B, S0]
        if ("self_attention.dense" in name or "dense_4h_to_h" in name) and name.endswith("weight"):
            return mesh, [B, S0]  # row-parallel
        return mesh, [B, B]
    if name.startswith(("patch_embed", "cls_token", "pos_embed")):
        return STAGE0, [B, B]
    return STAGE1, [B, B]  # norm, head


@pytest.mark.slow
def test_every_parameter_has_its_stage_and_sbp(cube):
    for name, p in cube["params"].items():
        mesh, sbp = _expected(name)
        assert (p["ranks"], p["sbp"]) == (mesh, sbp), name


@pytest.mark.slow
def test_graph_stage_ids(cube):
    s = cube["stages"]
    assert s["patch_embed"] == s["pos_drop"] == 0
    assert [s[f"blocks.{i}"] for i in range(4)] == [0, 0, 1, 1]
    assert s["norm"] == s["head"] == s["loss_func"] == 1


@pytest.mark.slow
def test_uneven_split_places_blocks_by_the_given_counts(tmp_path):
    probe = _probe(tmp_path, (1, 1, 2), split=[3, 1])
    assert [probe["stages"][f"blocks.{i}"] for i in range(4)] == [0, 0, 0, 1]
    assert probe["params"]["blocks.2.mlp.dense_h_to_4h.weight"]["ranks"] == [0]
    assert probe["params"]["blocks.3.mlp.dense_h_to_4h.weight"]["ranks"] == [1]


@pytest.mark.slow
def test_same_seed_same_weights_on_every_layout(single, cube):
    assert single["params"].keys() == cube["params"].keys()
    for name in single["params"]:
        a, b = single["params"][name], cube["params"][name]
        assert a["shape"] == b["shape"], name
        np.testing.assert_array_equal(a["value"], b["value"], err_msg=name)
        assert a["sum"] == pytest.approx(b["sum"], rel=1e-6, abs=1e-6), name
