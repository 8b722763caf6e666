"""ImageFolder: real bad files written in tmp (corrupt, truncated, CMYK, palette, RGBA,
grayscale) and folder layouts that must fail before training."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

import libai_vit  # noqa: F401
from libai_vit.data.folder import DatasetError, ImageFolder


def _save(path, image, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kw)


def _rgb(seed, size=(20, 16)):
    return Image.fromarray(
        np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    )


@pytest.fixture
def messy_root(tmp_path):
    """train/a: one good JPEG, a corrupt file, a truncated JPEG, a good PNG; train/b: CMYK, palette,
    RGBA, grayscale; val mirrors the classes."""
    root = tmp_path / "folder"
    a, b = root / "train" / "a", root / "train" / "b"
    _save(str(a / "0_good.jpg"), _rgb(0))
    os.makedirs(a, exist_ok=True)
    (a / "1_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG at all")
    _save(str(a / "2_truncated.jpg"), _rgb(1, (64, 64)), quality=95)
    data = (a / "2_truncated.jpg").read_bytes()
    (a / "2_truncated.jpg").write_bytes(data[: len(data) // 2])
    _save(str(a / "3_good.png"), _rgb(2))
    _save(str(b / "cmyk.jpg"), _rgb(3).convert("CMYK"))
    _save(str(b / "palette.png"), _rgb(4).convert("P"))
    rgba = _rgb(5).convert("RGBA")
    rgba.putalpha(0)  # fully transparent: must come out white
    _save(str(b / "rgba.png"), rgba)
    _save(str(b / "gray.png"), _rgb(6).convert("L"))
    (b / "notes.txt").write_text("not an image: ignored by extension")
    for cls in ("a", "b"):
        _save(str(root / "val" / cls / "v.png"), _rgb(7))
    return str(root)


def test_modes_become_rgb(messy_root):
    ds = ImageFolder(messy_root, train=True)
    assert ds.classes == ["a", "b"] and len(ds) == 8
    for i, (path, label) in enumerate(ds.samples):
        if label == 1:
            img = ds[i].get("images").tensor
            assert img.mode == "RGB", path
    rgba_index = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("rgba.png")][0]
    assert np.asarray(ds[rgba_index].get("images").tensor).min() == 255


def test_bad_files_are_skipped_with_a_warning(messy_root, caplog):
    ds = ImageFolder(messy_root, train=True)
    names = [os.path.basename(p) for p, _ in ds.samples]
    with caplog.at_level(logging.WARNING, logger="libai_vit.data.folder"):
        got = [ds[i] for i in range(len(ds))]
    # a bad sample is replaced by the next readable one: same count, deterministic substitute
    assert len(got) == len(ds)
    label = [int(x.get("labels").tensor) for x in got]
    assert label == [0, 0, 0, 0, 1, 1, 1, 1]
    good_png = np.asarray(ds[names.index("3_good.png")].get("images").tensor)
    for bad in ("1_corrupt.jpg", "2_truncated.jpg"):
        assert np.array_equal(np.asarray(got[names.index(bad)].get("images").tensor), good_png)
    warnings = [r.getMessage() for r in caplog.records]
    assert any("1_corrupt.jpg" in w for w in warnings) and any(
        "2_truncated.jpg" in w for w in warnings
    )
    assert "2 skipped so far" in warnings[-1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="libai_vit.data.folder"):
        ds[names.index("1_corrupt.jpg")]
    assert not caplog.records  # warned once per file


def test_all_unreadable_is_an_error(tmp_path):
    folder = tmp_path / "r" / "train" / "x"
    folder.mkdir(parents=True)
    (folder / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="no readable image"):
        ImageFolder(str(tmp_path / "r"))[0]


def test_a_class_whose_every_image_is_unreadable_is_an_error(tmp_path):
    """Skipping them all would train without the class, silently; the error names its folder."""
    _save(str(tmp_path / "r" / "train" / "a" / "ok.png"), _rgb(0))
    bad = tmp_path / "r" / "train" / "b"
    bad.mkdir(parents=True)
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"garbage")
    data = ImageFolder(str(tmp_path / "r"))
    assert data[0].get("labels").tensor.item() == 0
    with pytest.raises(
        DatasetError,
        match=f"{bad}: no readable image in the class folder \\(3 files, all unreadable\\)",
    ):
        data[1]


def test_empty_class_folder_is_an_error(messy_root):
    os.makedirs(os.path.join(messy_root, "train", "c"))
    with pytest.raises(DatasetError, match=r"train/c: empty class folder"):
        ImageFolder(messy_root, train=True)


def test_val_classes_must_match_train(messy_root):
    _save(os.path.join(messy_root, "val", "zz", "v.png"), _rgb(0))
    with pytest.raises(DatasetError, match=r"only in val: zz; only in train: none"):
        ImageFolder(messy_root, train=False)


def test_missing_split_and_absent_subset(messy_root, tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        ImageFolder(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="configured classes q"):
        ImageFolder(messy_root, classes=["a", "q"])
    sub = ImageFolder(messy_root, train=False, classes=["b"])
    assert sub.classes == ["b"] and [label for _, label in sub.samples] == [0]


def test_a_damaged_share_is_counted_not_listed_image_by_image(tmp_path, caplog):
    """150 unreadable images among readable ones: ten warnings name a file, then the count alone
    at 11 and at 100, and every sample still comes out (replaced by the next readable one)."""
    folder = tmp_path / "r" / "train" / "a"
    for i in range(150):
        _save(str(folder / f"{2 * i:03d}_ok.png"), _rgb(i, (4, 4)))
        (folder / f"{2 * i + 1:03d}_bad.jpg").write_bytes(b"garbage")
    data = ImageFolder(str(tmp_path / "r"))
    with caplog.at_level(logging.WARNING, logger="libai_vit.data.folder"):
        got = [data[i] for i in range(len(data))]
    assert len(got) == 300
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 12, warnings
    assert all(w.startswith("skipping unreadable image") for w in warnings[:10])
    assert warnings[10].startswith("11 unreadable images skipped so far in this process")
    assert "next count at 100" in warnings[10]
    assert warnings[11].startswith("100 unreadable images skipped so far")
