"""The Python data layers inside real Caffe nets, on tiny datasets in each true format.

Expected values are computed from the files as PIL / scipy read them, not
through the layers' own helpers.
"""
import gc
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import scipy.io
from PIL import Image

import caffe
from caffe import layers as L

from data import fetch as F_
from data import sbdd_to_png
from layers import params as P
from layers.folder import FolderReader
from layers.io import DataError
from layers.prefetch import Prefetcher
from data import layouts as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN = (104.00699, 116.66877, 122.67892)
SIZES = [("a", (37, 53)), ("b", (41, 29)), ("c", (23, 31))]


# ---- helpers -------------------------------------------------------------------
def make_net(tmp_path, module, layer, params, tops):
    n = caffe.NetSpec()
    outs = L.Python(module=f"layers.{module}", layer=layer, ntop=len(tops), param_str=json.dumps(params))
    for name, top in zip(tops, outs if len(tops) > 1 else [outs]):
        n[name] = top
    path = tmp_path / f"{module}-{len(list(tmp_path.iterdir()))}.prototxt"
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), caffe.TRAIN)


def serve(net, count, tops):
    """[(key, {top: array})] for `count` forwards."""
    out = []
    for _ in range(count):
        net.forward()
        out.append((net.layers[0].key, {t: net.blobs[t].data.copy() for t in tops}))
    return out


def caffe_rgb(path, mean):
    """What a Caffe data blob must hold: RGB -> BGR, minus the BGR mean, CHW."""
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float32)
    return (rgb[:, :, ::-1] - np.asarray(mean, np.float32)).transpose(2, 0, 1)[None]


def png(path):
    return np.asarray(Image.open(path))


def base_params(root, split="train", **kw):
    kw.setdefault("n_classes", 21)
    return dict(root=str(root), split=split, mean=list(MEAN), randomize=False, seed=1337, **kw)


# ---- every format: shapes, values, order ---------------------------------------
@pytest.mark.parametrize("prefetch", [False, True])
def test_voc(tmp_path, prefetch):
    root = F.write_voc(str(tmp_path / "VOC2011"), SIZES)
    net = make_net(tmp_path, "voc", "VOCSegDataLayer",
                   base_params(root, n_classes=21, prefetch=prefetch), ["data", "label"])
    served = serve(net, 4, ["data", "label"])
    assert [k for k, _ in served] == ["a", "b", "c", "a"]           # split order, wrapping
    for key, blobs in served:
        jpg = os.path.join(root, "JPEGImages", key + ".jpg")
        h, w = dict(SIZES)[key]
        assert blobs["data"].shape == (1, 3, h, w) and blobs["label"].shape == (1, 1, h, w)
        np.testing.assert_array_equal(blobs["data"], caffe_rgb(jpg, MEAN))
        rgb = np.asarray(Image.open(jpg), np.float32)
        np.testing.assert_array_equal(blobs["data"][0, 0], rgb[:, :, 2] - np.float32(MEAN[0]))  # B first
        label = png(os.path.join(root, "SegmentationClass", key + ".png"))
        np.testing.assert_array_equal(blobs["label"][0, 0], label)
        assert 255 in label and label[label != 255].max() < 21


def test_sbdd(tmp_path):
    root = F.write_sbdd(str(tmp_path / "dataset"), SIZES[:2])
    net = make_net(tmp_path, "sbdd", "SBDDSegDataLayer", base_params(root, n_classes=21), ["data", "label"])
    for key, blobs in serve(net, 2, ["data", "label"]):
        np.testing.assert_array_equal(blobs["data"], caffe_rgb(os.path.join(root, "img", key + ".jpg"), MEAN))
        mat = scipy.io.loadmat(os.path.join(root, "cls", key + ".mat"))
        np.testing.assert_array_equal(blobs["label"][0, 0], mat["GTcls"][0]["Segmentation"][0])


def test_folder_png_and_jpg(tmp_path):
    for ext in (".png", ".jpg"):
        root = F.write_folder(str(tmp_path / ext[1:]), SIZES, n_classes=5, ext=ext)
        net = make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root, n_classes=5),
                       ["data", "label"])
        for key, blobs in serve(net, 3, ["data", "label"]):
            image = os.path.join(root, "images", key + ext)
            np.testing.assert_array_equal(blobs["data"], caffe_rgb(image, MEAN))
            np.testing.assert_array_equal(blobs["label"][0, 0], png(os.path.join(root, "labels", key + ".png")))


def test_nyud_tops_in_any_order(tmp_path):
    root = F.write_nyud(str(tmp_path / "nyud"), SIZES[:2])
    tops = ["hha", "label", "depth", "color"]
    color_mean, hha_mean = (116.190, 97.203, 92.318), (132.431, 94.076, 118.477)
    params = dict(root=root, split="trainval", tops=tops, mean=list(color_mean), n_classes=40,
                  randomize=False)
    net = make_net(tmp_path, "nyud", "NYUDSegDataLayer", params, tops)
    for key, blobs in serve(net, 2, tops):
        f = lambda d, ext=".png": os.path.join(root, d, f"img_{key}{ext}")   # noqa: E731
        np.testing.assert_array_equal(blobs["color"], caffe_rgb(f("data/images"), color_mean))
        depth = png(f("data/depth")).astype(np.float32)
        assert png(f("data/depth")).dtype == np.uint16
        np.testing.assert_allclose(blobs["depth"][0, 0], np.log(depth) - 7.844, rtol=0, atol=1e-5)
        hha = png(f("data/hha")).astype(np.float32) - np.float32(hha_mean)      # no channel swap
        np.testing.assert_array_equal(blobs["hha"][0], hha.transpose(2, 0, 1))
        raw = scipy.io.loadmat(f("segmentation", ".mat"))["segmentation"].astype(int)
        np.testing.assert_array_equal(blobs["label"][0, 0], np.where(raw == 0, 255, raw - 1))
        assert (raw == 0).any() and (raw == 40).any()


def test_siftflow_two_labels(tmp_path):
    root = F.write_siftflow(str(tmp_path / "sift-flow"), SIZES[:2])
    mean = (114.578, 115.294, 108.353)
    params = dict(root=root, split="trainval", mean=list(mean), randomize=False, n_classes=33)
    net = make_net(tmp_path, "siftflow", "SIFTFlowSegDataLayer", params, ["data", "sem", "geo"])
    for key, blobs in serve(net, 2, ["data", "sem", "geo"]):
        f = lambda kind, ext: os.path.join(root, kind, F.SIFTFLOW_SUBDIR, key + ext)   # noqa: E731
        np.testing.assert_array_equal(blobs["data"], caffe_rgb(f("Images", ".jpg"), mean))
        sem = scipy.io.loadmat(f("SemanticLabels", ".mat"))["S"].astype(int)
        geo = scipy.io.loadmat(f("GeoLabels", ".mat"))["S"].astype(int)
        np.testing.assert_array_equal(blobs["sem"][0, 0], np.where(sem == 0, 255, sem - 1))
        np.testing.assert_array_equal(blobs["geo"][0, 0], np.where(geo <= 0, 255, geo - 1))
        assert (geo == -1).any() and blobs["sem"].max() == 255 and blobs["geo"][blobs["geo"] < 255].max() == 2


@pytest.mark.parametrize("classes", [59, 459])
def test_pascalcontext(tmp_path, classes):
    root, voc = F.write_pascalcontext(str(tmp_path / "pascal-context"), str(tmp_path / "VOC2010"), SIZES[:2])
    params = base_params(root, voc_root=voc, classes=classes, n_classes=classes + 1)
    net = make_net(tmp_path, "pascalcontext", "PASCALContextSegDataLayer", params, ["data", "label"])
    ids59 = list(F.context_label_ids())
    for key, blobs in serve(net, 2, ["data", "label"]):
        np.testing.assert_array_equal(blobs["data"], caffe_rgb(os.path.join(voc, "JPEGImages", key + ".jpg"), MEAN))
        full = scipy.io.loadmat(os.path.join(root, "trainval", key + ".mat"))["LabelMap"].astype(int)
        if classes == 459:
            expected = full
        else:
            expected = np.vectorize(lambda v: ids59.index(v) + 1 if v in ids59 else 0)(full)
            assert {12, 16, 28, 52} <= set(np.unique(expected))   # table, pottedplant, cloth, bedclothes
        np.testing.assert_array_equal(blobs["label"][0, 0], expected)


def test_voc_finds_shipped_seg11valid(tmp_path):
    root = F.write_voc(str(tmp_path / "VOC2011"), SIZES[:1])
    with pytest.raises(FileNotFoundError) as e:
        make_net(tmp_path, "voc", "VOCSegDataLayer", base_params(root, "seg11valid"), ["data", "label"])
    assert os.path.join(ROOT, "data", "seg11valid.txt") in str(e.value)
    assert os.path.join(root, "JPEGImages", "2007_000033.jpg") in str(e.value)


def test_seg11valid_has_736_unique_voc2011_ids():
    path = os.path.join(ROOT, "data", "seg11valid.txt")
    ids = open(path).read().split()
    assert len(ids) == len(set(ids)) == 736
    assert F_.md5_of(path) == "7984b6ce736bd3666d8b7ee70b5401da"     # the reference file, 8832 bytes
    assert all(i[:4] in ("2007", "2008", "2009", "2010", "2011") and len(i) == 11 for i in ids)


# ---- ordering and prefetch -----------------------------------------------------
SIX = [(c, (9 + i, 11 + 2 * i)) for i, c in enumerate("uvwxyz")]


def keys_served(tmp_path, root, n, **kw):
    params = dict(base_params(root, n_classes=5), **kw)
    net = make_net(tmp_path, "folder", "FolderSegDataLayer", params, ["data", "label"])
    return serve(net, n, ["data", "label"])


def test_seeded_shuffle_is_reproducible_epochwise(tmp_path):
    root = F.write_folder(str(tmp_path / "f"), SIX)
    runs = [[k for k, _ in keys_served(tmp_path, root, 12, randomize=True, seed=s, prefetch=False)]
            for s in (1337, 1337, 7)]
    assert runs[0] == runs[1] != runs[2]
    for run in runs:
        assert sorted(run[:6]) == sorted(run[6:]) == list("uvwxyz")   # each epoch a permutation
    assert runs[0][:6] != list("uvwxyz")
    ids = list("uvwxyz")
    perm = np.random.RandomState(1337)
    assert runs[0] == [ids[i] for i in perm.permutation(6)] + [ids[i] for i in perm.permutation(6)]


@pytest.mark.parametrize("randomize", [True, False])
def test_prefetch_gives_identical_sequence(tmp_path, randomize):
    """Loading in the layer, the prefetch thread (workers 0), the loader processes."""
    root = F.write_folder(str(tmp_path / "f"), SIX)
    a, *others = (keys_served(tmp_path, root, 14, randomize=randomize, **kw)
                  for kw in (dict(prefetch=False), dict(workers=0), dict(workers=2, queue_depth=1)))
    for b in others:
        assert [k for k, _ in a] == [k for k, _ in b]
        for (_, x), (_, y) in zip(a, b):
            for top in x:
                np.testing.assert_array_equal(x[top], y[top])


def test_extra_reshape_does_not_skip_an_image(tmp_path):
    root = F.write_folder(str(tmp_path / "f"), SIZES)
    net = make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root), ["data", "label"])
    net.reshape()
    net.reshape()
    assert [k for k, _ in serve(net, 3, ["data"])] == ["a", "b", "c"]


def test_prefetch_thread_is_daemon_and_stops_when_collected():
    p = Prefetcher(lambda k: k * 2, iter(range(100)), name="test-prefetch-gc")
    assert p.next() == (0, 0) and p.next() == (1, 2)
    thread = next(t for t in threading.enumerate() if t.name == "test-prefetch-gc")
    assert thread.daemon
    del p
    gc.collect()
    thread.join(2)
    assert not thread.is_alive()
    closed = Prefetcher(lambda k: k, iter(range(3)))
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.next()


def test_prefetch_thread_does_not_keep_process_alive():
    code = ("import itertools, time; from layers.prefetch import Prefetcher; "
            "p = Prefetcher(lambda k: time.sleep(60), itertools.count()); print('started')")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "started" in out.stdout
    assert time.monotonic() - t0 < 20


# ---- bad inputs: each error names the file -------------------------------------
@pytest.mark.parametrize("prefetch", [False, True])
def test_size_mismatch_raises_at_setup_naming_files(tmp_path, prefetch):
    """Found from the headers when the net is built, not when training reaches it."""
    root = F.write_folder(str(tmp_path / "f"), SIZES)
    label = os.path.join(root, "labels", "b.png")
    Image.fromarray(np.zeros((40, 29), np.uint8)).save(label)
    with pytest.raises(DataError, match="size 29x40 .WxH. differs from") as e:
        make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root, prefetch=prefetch),
                 ["data", "label"])
    assert label in str(e.value) and os.path.join(root, "images", "b.png") in str(e.value)


def test_size_mismatch_in_load_names_files(tmp_path):
    """A label changed after start-up is still caught when it is loaded."""
    root = F.write_folder(str(tmp_path / "f"), SIZES)
    reader = FolderReader.from_param_str(json.dumps(base_params(root)))
    label = os.path.join(root, "labels", "b.png")
    Image.fromarray(np.zeros((40, 29), np.uint8)).save(label)
    with pytest.raises(DataError) as e:
        reader.load("b")
    assert label in str(e.value) and os.path.join(root, "images", "b.png") in str(e.value)


@pytest.mark.parametrize("prefetch", [False, True])
def test_truncated_image(tmp_path, prefetch):
    root = F.write_voc(str(tmp_path / "VOC"), SIZES[:2])
    jpg = os.path.join(root, "JPEGImages", "b.jpg")
    data = open(jpg, "rb").read()
    open(jpg, "wb").write(data[: len(data) // 2])
    net = make_net(tmp_path, "voc", "VOCSegDataLayer", base_params(root, prefetch=prefetch), ["data", "label"])
    net.forward()
    with pytest.raises(DataError, match="truncated") as e:
        net.forward()
    assert jpg in str(e.value)


def test_garbage_image(tmp_path):
    root = F.write_folder(str(tmp_path / "f"), SIZES[:1])
    bad = os.path.join(root, "images", "a.png")
    open(bad, "wb").write(b"not an image")
    with pytest.raises(DataError, match="unreadable") as e:
        make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root), ["data", "label"])
    assert bad in str(e.value)


def test_label_out_of_range(tmp_path):
    root = F.write_folder(str(tmp_path / "f"), SIZES[:1], n_classes=5)
    with pytest.raises(DataError, match=r"outside \[0, 3\)") as e:
        make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root, n_classes=3), ["data", "label"])
    assert os.path.join(root, "labels", "a.png") in str(e.value)


def test_rgb_label_png_refused(tmp_path):
    root = F.write_folder(str(tmp_path / "f"), SIZES[:1])
    label = os.path.join(root, "labels", "a.png")
    Image.open(label).convert("RGB").save(label)
    with pytest.raises(DataError, match="single-channel") as e:
        FolderReader.from_param_str(json.dumps(base_params(root))).load("a")
    assert label in str(e.value)


def test_missing_file_named_in_split(tmp_path):
    root = F.write_sbdd(str(tmp_path / "dataset"), SIZES)
    missing = os.path.join(root, "cls", "b.mat")
    os.remove(missing)
    with pytest.raises(FileNotFoundError) as e:
        make_net(tmp_path, "sbdd", "SBDDSegDataLayer", base_params(root), ["data", "label"])
    assert missing in str(e.value) and os.path.join(root, "train.txt") in str(e.value)


def test_empty_and_missing_split(tmp_path):
    root = F.write_folder(str(tmp_path / "f"), SIZES[:1])
    open(os.path.join(root, "empty.txt"), "w").write("\n  \n")
    with pytest.raises(DataError, match="no ids") as e:
        make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root, "empty"), ["data", "label"])
    assert os.path.join(root, "empty.txt") in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root, "nope"), ["data", "label"])
    assert os.path.join(root, "nope.txt") in str(e.value)


def test_split_file_binary_bom_and_duplicates(tmp_path):
    """Binary content and repeated ids name the file; a UTF-8 BOM is not part of the first id."""
    root = F.write_folder(str(tmp_path / "f"), SIZES[:2])
    split = os.path.join(root, "train.txt")

    open(split, "wb").write(b"\xef\xbb\xbfa\nb\n")                  # BOM, as Notepad writes
    reader = FolderReader.from_param_str(json.dumps(base_params(root)))
    assert reader.ids == ["a", "b"]
    reader.check_files()

    for content in (b"a\n\x00\x01\x02\xff", b"\x89PNG\r\n\x1a\n\xff\xfe\xfd"):
        open(split, "wb").write(content)
        with pytest.raises(DataError, match="not UTF-8 text|binary content") as e:
            make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root), ["data", "label"])
        assert split in str(e.value)

    for encoding in ("utf-16", "utf-16-le", "utf-16-be"):        # with and without a BOM
        open(split, "wb").write("a\nb\n".encode(encoding))
        with pytest.raises(DataError, match="UTF-16 text: save the split file as UTF-8") as e:
            FolderReader.from_param_str(json.dumps(base_params(root)))
        assert split in str(e.value)

    open(split, "w").write("a\nb\n\n a \n")
    with pytest.raises(DataError, match=r"id 'a' is listed twice \(lines 1 and 4\)") as e:
        make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root), ["data", "label"])
    assert split in str(e.value)


def test_deeply_nested_param_str_is_a_clear_error(tmp_path):
    for text in ("[" * 100000 + "]" * 100000, '{"root": ' + "[" * 100000 + "]" * 100000 + "}",
                 "{'root': " + "(" * 100000 + ")" * 100000 + "}"):
        with pytest.raises(ValueError, match="nested too deeply|neither JSON") as e:
            P.decode(text)
        assert len(str(e.value)) < 400                   # the message quotes only the start
    with pytest.raises(ValueError, match="nested too deeply"):
        P.decode("[" * 100000 + "]" * 100000)


def write_binary_masks(root, scale):
    """A folder split of two images whose masks are foreground `scale`, background 0."""
    F.write_folder(root, SIZES[:2], n_classes=2)
    for key in ("a", "b"):
        path = os.path.join(root, "labels", key + ".png")
        mask = np.asarray(Image.open(path)) % 255                      # classes 0/1, void gone
        Image.fromarray((mask * scale).astype(np.uint8), mode="L").save(path)
    return root


def test_binary_masks_stored_as_0_255_fail_at_setup(tmp_path):
    root = write_binary_masks(str(tmp_path / "f"), 255)
    with pytest.raises(DataError, match="hold only class 0 and void 255.*store it as class 1") as e:
        make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root, n_classes=2), ["data", "label"])
    assert os.path.join(root, "train.txt") in str(e.value)
    net = make_net(tmp_path, "folder", "FolderSegDataLayer",
                   base_params(root, n_classes=2, background_only=True), ["data", "label"])
    net.forward()
    fixed = write_binary_masks(str(tmp_path / "g"), 1)
    make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(fixed, n_classes=2), ["data", "label"])


@pytest.mark.parametrize("fmt", ["folder", "voc"])
def test_classes_beyond_n_classes_fail_at_setup_naming_the_file(tmp_path, fmt):
    """Label 200 in a 5-class net crashes Caffe, 30 in 21 classes gives a garbage
    loss: both are refused when the net is built, not when the image comes up."""
    n_classes, bad = (5, 200) if fmt == "folder" else (21, 30)
    if fmt == "folder":
        root = F.write_folder(str(tmp_path / "f"), SIZES, n_classes=n_classes)
        path = os.path.join(root, "labels", "c.png")
        layer = "FolderSegDataLayer"
    else:
        root = F.write_voc(str(tmp_path / "VOC"), SIZES, n_classes=n_classes)
        path = os.path.join(root, "SegmentationClass", "c.png")
        layer = "VOCSegDataLayer"
    im = Image.open(path)
    label = np.array(im)
    label[5, 5] = bad
    out = Image.fromarray(label, mode=im.mode)
    if im.mode == "P":
        out.putpalette(im.getpalette())
    out.save(path)
    with pytest.raises(DataError, match=rf"label values {bad} outside \[0, {n_classes}\)") as e:
        make_net(tmp_path, fmt, layer, base_params(root, n_classes=n_classes), ["data", "label"])
    assert path in str(e.value)


def test_solve_cli_refuses_binary_masks_in_one_line(tmp_path):
    root = write_binary_masks(str(tmp_path / "f"), 255)
    open(os.path.join(root, "val.txt"), "w").write("a\nb\n")
    weights = tmp_path / "any.caffemodel"
    weights.write_bytes(b"x")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    r = subprocess.run([sys.executable, "-m", "solvers.solve", "fcn32s", "--dataset", "folder",
                        "--classes", "2", "--root", root, "--weights", str(weights), "--width", "0.0625",
                        "--iters", "1", "--out", str(tmp_path / "run")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "hold only class 0 and void 255" in r.stderr and "Traceback" not in r.stderr


def test_format_specific_bad_files(tmp_path):
    nyud = F.write_nyud(str(tmp_path / "nyud"), SIZES[:1])
    depth = os.path.join(nyud, "data", "depth", "img_a.png")
    Image.fromarray(np.zeros((37, 53), np.uint16)).save(depth)
    from layers.nyud import NYUDReader
    reader = NYUDReader.from_param_str(json.dumps(dict(root=nyud, split="trainval", tops=["depth"], n_classes=40)))
    with pytest.raises(DataError, match="log undefined") as e:
        reader.load("a")
    assert depth in str(e.value)

    sf = F.write_siftflow(str(tmp_path / "sf"), SIZES[:1])
    sem = os.path.join(sf, "SemanticLabels", F.SIFTFLOW_SUBDIR, "a.mat")
    scipy.io.savemat(sem, {"S": np.full((37, 53), 34.0)})
    with pytest.raises(DataError, match=r"outside \[0, 33\)") as e:
        make_net(tmp_path, "siftflow", "SIFTFlowSegDataLayer", base_params(sf, "trainval", n_classes=33),
                 ["data", "sem", "geo"])
    assert sem in str(e.value)

    root, voc = F.write_pascalcontext(str(tmp_path / "pc"), str(tmp_path / "VOC2010"), SIZES[:1])
    labels = os.path.join(root, "labels.txt")
    open(labels, "w").write("1: accordion\n")
    with pytest.raises(DataError, match="aeroplane") as e:
        make_net(tmp_path, "pascalcontext", "PASCALContextSegDataLayer", base_params(root, voc_root=voc),
                 ["data", "label"])
    assert os.path.join(root, "59_labels.txt") in str(e.value)


# ---- param_str -----------------------------------------------------------------
def test_param_str_errors_list_valid_keys(tmp_path):
    root = F.write_folder(str(tmp_path / "f"), SIZES[:1])
    with pytest.raises(ValueError, match="unknown param_str key.*'sbdd_dir'.*valid keys: background_only, mean, n_classes"):
        make_net(tmp_path, "folder", "FolderSegDataLayer", dict(base_params(root), sbdd_dir="x"), ["data", "label"])
    with pytest.raises(ValueError, match=r"missing required param_str key\(s\) \['mean', 'n_classes', 'root'\]"):
        FolderReader.from_param_str(json.dumps(dict(split="train")))
    with pytest.raises(ValueError, match="'mean'.*3 numbers"):
        FolderReader.from_param_str(json.dumps(dict(base_params(root), mean=[1, 2])))
    with pytest.raises(ValueError, match="'seed'.*2\\*\\*32"):
        FolderReader.from_param_str(json.dumps(dict(base_params(root), seed=-1)))
    with pytest.raises(ValueError, match="'randomize'.*true or false"):
        FolderReader.from_param_str(json.dumps(dict(base_params(root), randomize=1)))
    with pytest.raises(ValueError, match="needs 2 tops"):
        make_net(tmp_path, "folder", "FolderSegDataLayer", base_params(root), ["data", "label", "extra"])


def test_param_str_python_literal_accepted_never_evaluated(tmp_path):
    root = F.write_folder(str(tmp_path / "f"), SIZES[:1])
    literal = f"dict(root={root!r})"          # a call: eval would run it, literal_eval refuses
    with pytest.raises(ValueError, match="neither JSON nor a Python literal"):
        P.decode(literal)
    with pytest.raises(ValueError, match="neither JSON"):
        P.decode("__import__('os').system('touch /tmp/owned')")
    reader = FolderReader.from_param_str(
        f"{{'root': {root!r}, 'split': 'train', 'mean': (104.0, 116.7, 122.7), 'randomize': False, 'n_classes': 5}}")
    assert reader.params["mean"] == (104.0, 116.7, 122.7) and reader.params["randomize"] is False
    assert reader.params["seed"] == 1337 and reader.params["prefetch"] is True


# ---- data/: fetch and the SBD converter ----------------------------------------
def test_fetch_verifies_checksum_atomically(tmp_path):
    src = tmp_path / "archive.bin"
    src.write_bytes(b"fcn" * 1000)
    md5 = F_.md5_of(str(src))
    dest = tmp_path / "dl" / "archive.bin"
    with pytest.raises(F_.FetchError, match="does not match"):
        F_.fetch(src.as_uri(), str(dest), "0" * 32)
    assert not dest.parent.exists() or os.listdir(dest.parent) == []      # nothing left behind
    assert F_.fetch(src.as_uri(), str(dest), md5) == str(dest)
    assert dest.read_bytes() == src.read_bytes()
    src.unlink()                               # present and valid: no download attempted
    assert F_.fetch(src.as_uri(), str(dest), md5) == str(dest)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_over_local_http_and_offline_message(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"hello")
    handler = lambda *a, **k: QuietHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/f.txt"
        dest = tmp_path / "out" / "f.txt"
        assert F_.fetch(url, str(dest), F_.md5_of(str(tmp_path / "f.txt"))) == str(dest)
        with pytest.raises(F_.FetchError, match="HTTP 404"):
            F_.fetch(url + ".missing", str(tmp_path / "out" / "m"), None)
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "gone" / "x.tar"
    with pytest.raises(F_.FetchError, match="Offline") as e:
        F_.fetch(f"http://127.0.0.1:{port}/x.tar", str(dest), "0" * 32, timeout=5)
    assert str(dest) in str(e.value) and not dest.exists()


def test_sbdd_to_png(tmp_path):
    root = F.write_sbdd(str(tmp_path / "dataset"), SIZES[:2])
    bad = os.path.join(root, "cls", "zz.mat")
    open(bad, "wb").write(b"garbage")
    done, errors = sbdd_to_png.convert(root, "cls", log=open(os.devnull, "w"))
    assert done == 2 and len(errors) == 1 and bad in errors[0]
    for key in ("a", "b"):
        im = Image.open(os.path.join(root, "cls", key + ".png"))
        assert im.mode == "P"
        mat = scipy.io.loadmat(os.path.join(root, "cls", key + ".mat"))
        np.testing.assert_array_equal(np.asarray(im), mat["GTcls"][0]["Segmentation"][0])
    assert sorted(os.listdir(os.path.join(root, "cls"))) == ["a.mat", "a.png", "b.mat", "b.png", "zz.mat"]


def test_every_generated_param_str_parses():
    """The contract with net_specs: each model's train/val param_str is valid for its layer."""
    import importlib
    from net_specs import MODELS, NetConfig, custom_dataset, get_dataset
    from net_specs.build import data_param_str
    cases = [(m, get_dataset(m.dataset)) for m in MODELS.values()]
    cases.append((MODELS["voc-fcn8s"], custom_dataset(5, (1, 2, 3), "/x")))
    for model, dataset in cases:
        for phase, source in (("train", dataset.train), ("val", dataset.val)):
            layer = getattr(importlib.import_module(source.module), source.layer_class)
            params = P.parse(data_param_str(NetConfig(model, dataset), phase), layer.reader_class.spec())
            assert params["randomize"] is (phase == "train") and params["seed"] == 1337
