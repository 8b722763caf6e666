"""Bad, unsafe or ill-fitting checkpoint files fail with one clear line naming the file."""

import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from timm_oracle import MANIFEST, ORACLE, TOL, fixture, output

from libai_vit import VisionTransformer
from libai_vit.pretrained import PretrainedError, load_pretrained, read

TINY = MANIFEST["fixtures"]["tiny16"]["timm_kwargs"]
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _fails(path, match, **kwargs):
    with pytest.raises(PretrainedError, match=match) as e:
        load_pretrained(
            VisionTransformer(**{**TINY, **kwargs.pop("model", {})}).eval(), str(path), **kwargs
        )
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    _fails(tmp_path / "nope.pth", "no such file")


def test_unknown_bytes(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"this is not a checkpoint at all")
    _fails(tmp_path / "x.safetensors", "not a safetensors, torch")


@pytest.mark.parametrize("name", ["tiny16.safetensors", "tiny16.pth", "tiny16.npz"])
def test_truncated(tmp_path, name):
    data = open(fixture(name), "rb").read()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    _fails(tmp_path / name, "corrupt|not a")


def test_unsafe_pickle_refused_unless_trusted():
    with pytest.raises(PretrainedError, match=r"argparse\.Namespace.*trust=True"):
        read(fixture("unsafe.pth"))
    fmt, content = read(fixture("unsafe.pth"), trust=True)
    assert fmt == "torch" and content["args"].lr == 0.1


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_running_pickle_refused(tmp_path):
    # a torch-like zip whose pickle would call os.system when loaded
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"model": _Exploit()}, protocol=2))
    _fails(path, r"refusing to unpickle (posix|os)\.system")


def test_wrong_width():
    _fails(
        fixture("tiny16.safetensors"),
        r"has shape \(.*48.*\), the model expects \(.*64",
        model=dict(embed_dim=64, num_heads=4),
    )


def test_deeper_model_strict_and_not():
    _fails(
        fixture("tiny16.safetensors"), r"does not fit the model.*blocks\.2\.", model=dict(depth=3)
    )
    report = load_pretrained(
        VisionTransformer(**{**TINY, "depth": 3}).eval(),
        fixture("tiny16.safetensors"),
        strict=False,
    )
    assert all(n.startswith("blocks.2.") for n in report.missing) and len(report.missing) == 12


def test_incomplete_npz(tmp_path):
    with np.load(fixture("tiny16.npz")) as w:
        entries = {k: w[k] for k in w.files if k != "Transformer/encoderblock_1/LayerNorm_2/bias"}
    np.savez(tmp_path / "cut.npz", **entries)
    _fails(tmp_path / "cut.npz", "incomplete npz checkpoint, no entry")


def test_distilled_deit_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    state = load_file(fixture("tiny16.safetensors"))
    state["dist_token"] = np.zeros((1, 1, 48), np.float32)
    save_file(state, str(tmp_path / "distilled.safetensors"))
    _fails(tmp_path / "distilled.safetensors", "distilled DeiT")


def test_not_a_vit(tmp_path):
    from safetensors.numpy import save_file

    save_file(
        {"conv1.weight": np.zeros((4, 3, 3, 3), np.float32)}, str(tmp_path / "resnet.safetensors")
    )
    _fails(tmp_path / "resnet.safetensors", "does not fit the model")


def test_convert_tool_output_loads_with_libai_checkpointer(tmp_path):
    from libai.utils.checkpoint import Checkpointer

    case = MANIFEST["cases"]["tiny16.npz@64"]
    src = tmp_path / "tiny16.npz"
    shutil.copy(fixture("tiny16.npz"), src)
    dst = tmp_path / "converted"
    over = [f"{k}={v}" for k, v in TINY.items() if k in ("embed_dim", "depth", "num_heads")]
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "convert_checkpoint.py"),
            str(src),
            str(dst),
            "--model",
            "vit_tiny_patch16_224",
            "--img-size",
            "64",
            "--num-classes",
            "10",
            "--set",
            *over,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = VisionTransformer(**case["kwargs"]).eval()
    Checkpointer(model).load(str(dst))
    ours = output(model, ORACLE[case["input"]], "logits")
    assert np.abs(ours - ORACLE["tiny16.npz@64/output"]).max() < TOL


def test_convert_tool_error_is_one_line(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "convert_checkpoint.py"),
            str(tmp_path / "bad.pth"),
            str(tmp_path / "out"),
            "--model",
            "vit_tiny_patch16_224",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert f"error: {tmp_path / 'bad.pth'}: not a safetensors" in proc.stderr


@pytest.mark.parametrize(
    "case", ["deit.pth", "dinov2_reg4.release", "clip.release", "eva02_b.safetensors"]
)
def test_a_stage_reads_only_its_own_blocks(case, monkeypatch):
    """What `load.convert` reads for a pipeline stage holding block 1 of 2: the entries outside
    the blocks and block 1's, one group at a time; block 0's stay unread."""
    from timm_oracle import build

    from libai_vit.pretrained import load, timm_format, torch_pickle

    path = fixture(MANIFEST["cases"][case]["file"])
    entries = timm_format.unwrap(load.read(path)[1], path)
    reads = []
    real = torch_pickle.LazyArray.__array__
    monkeypatch.setattr(
        torch_pickle.LazyArray, "__array__", lambda self, *a: reads.append(self) or real(self, *a)
    )
    model = build(case)
    groups = [arrays for _, arrays, _, _ in load.convert(path, model, holds_block=lambda i: i == 1)]
    blocks = [{n.split(".")[1] for n in arrays if n.startswith("blocks.")} for arrays in groups]
    assert blocks == [set(), {"1"}], blocks
    in_blocks = [k for k in entries if load._BLOCK_OF_KEY.search(k)]
    assert len(in_blocks) % 2 == 0 and 0 < len(reads) <= len(entries) - len(in_blocks) // 2


def test_internvl_checkpoint_reads_only_its_vision_tower(monkeypatch):
    """An InternVL chat checkpoint in shards: the projector and language model beside the tower
    stay unread."""
    from timm_oracle import build

    from libai_vit.pretrained import safetensors_file

    case = "intern6b.chat_shards"
    reads, real = [], safetensors_file._read
    monkeypatch.setattr(
        safetensors_file, "_read", lambda path, *a: reads.append((path, a[0])) or real(path, *a)
    )
    load_pretrained(build(case), fixture(MANIFEST["cases"][case]["file"]))
    entries = {}  # (shard, data offset) -> name
    for shard in sorted({path for path, _ in reads}):
        for name, array in safetensors_file.read(shard).items():
            entries[(shard, array._read.args[1])] = name
    names = {entries[r] for r in reads}
    every = {n for shard in {p for p, _ in entries} for n in safetensors_file.read(shard)}
    assert names == {n for n in every if n.startswith("vision_model.")}
    assert len(every - names) == 2  # the projector's and the language model's entries


def test_sharded_checkpoint_without_its_shards(tmp_path):
    index = MANIFEST["cases"]["intern6b.chat_shards"]["file"]
    shutil.copy(fixture(index), tmp_path / "model.safetensors.index.json")
    _fails(tmp_path / "model.safetensors.index.json", "its shard intern6b_chat-0000.* beside it")
