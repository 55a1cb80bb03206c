"""layers.labelcheck: labels checked by content at start-up, fast and cached."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from data import layouts as F
from layers import labelcheck
from layers.folder import FolderReader
from layers.io import DataError

SIZES = [("a", (37, 53)), ("b", (41, 29)), ("c", (23, 31))]


def reader(root, **kw):
    params = dict(root=str(root), split="train", mean=[0, 0, 0], randomize=False, n_classes=21)
    params.update(kw)
    return FolderReader.from_param_str(json.dumps(params))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("FCN_CACHE_DIR", str(directory))
    return directory


def count_decodes(monkeypatch):
    calls = []
    real = labelcheck.read_gray

    def counting(path):
        calls.append(path)
        return real(path)
    monkeypatch.setattr(labelcheck, "read_gray", counting)
    return calls


def test_jpeg_saved_as_png_is_refused_naming_the_file(tmp_path, cache):
    root = F.write_folder(str(tmp_path / "f"), SIZES)
    label = os.path.join(root, "labels", "b.png")
    buf = io.BytesIO()
    Image.open(label).save(buf, format="JPEG", quality=90)
    open(label, "wb").write(buf.getvalue())
    with pytest.raises(DataError, match="JPEG data under a .png name") as e:
        reader(root).check_label_set()
    assert str(e.value).startswith(label)


def test_exif_rotated_photo_gets_a_hint(tmp_path, cache):
    root = F.write_folder(str(tmp_path / "f"), SIZES, ext=".jpg")
    photo = os.path.join(root, "images", "a.jpg")
    image = Image.open(photo)
    exif = Image.Exif()
    exif[0x0112] = 6                                 # shown rotated by 90 degrees
    image.save(photo, exif=exif.tobytes())
    w, h = image.size
    Image.fromarray(np.zeros((w, h), np.uint8)).save(os.path.join(root, "labels", "a.png"))
    with pytest.raises(DataError, match=f"differs from {w}x{h}.*EXIF orientation 6.*ignored"):
        reader(root).check_label_set()


def test_warm_start_decodes_nothing_and_a_changed_label_is_checked_again(tmp_path, cache,
                                                                         monkeypatch):
    root = F.write_folder(str(tmp_path / "f"), SIZES)
    decoded = count_decodes(monkeypatch)
    reader(root).check_label_set()
    assert len(decoded) == 3
    reader(root).check_label_set()                  # a restart or --resume
    assert len(decoded) == 3
    assert len(os.listdir(cache)) == 1
    label = os.path.join(root, "labels", "c.png")
    bad = np.full((23, 31), 30, np.uint8)
    Image.fromarray(bad).save(label)
    os.utime(label, ns=(1, 1))
    with pytest.raises(DataError, match="label values 30 outside"):
        reader(root).check_label_set()
    assert decoded[3:] == [label]
    with pytest.raises(DataError, match="label values 30 outside"):   # the cache keeps the values
        reader(root).check_label_set()
    reader(root, n_classes=31).check_label_set()    # checked against the classes of this start
    assert len(decoded) == 4


def test_large_split_prints_progress(tmp_path, cache, monkeypatch, capsys):
    root = F.write_folder(str(tmp_path / "f"), SIZES)
    monkeypatch.setattr(labelcheck, "PROGRESS_FROM", 2)
    reader(root).check_label_set()
    err = capsys.readouterr().err
    assert "checking 3 labels of" in err and "3 labels checked in" in err
    reader(root).check_label_set()
    assert capsys.readouterr().err == ""            # warm: nothing to check, nothing said


def test_unwritable_cache_warns_and_checks_anyway(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("FCN_CACHE_DIR", str(blocker / "cache"))
    root = F.write_folder(str(tmp_path / "f"), SIZES)
    reader(root).check_label_set()
    assert "label check cache not written" in capsys.readouterr().err


def test_values_by_bincount_match_unique(tmp_path):
    rng = np.random.default_rng(0)
    for dtype, top in ((np.uint8, 256), (np.uint16, 3000)):
        label = rng.integers(0, top, (17, 13)).astype(dtype)
        path = str(tmp_path / f"l{top}.png")
        Image.fromarray(label).save(path)
        assert labelcheck.label_values(path) == np.unique(np.asarray(Image.open(path))).tolist()
