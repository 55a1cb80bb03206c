"""solvers.infer: segment images with a narrow FCN whose output is known.

The weights (tests/seg_fixtures.colour_weights) make the predicted class a
function of the image colour: with the VOC mean, red -> person (15),
green -> sofa (18), blue -> aeroplane (1), mid-grey -> aeroplane (its blue
channel is the one furthest above the mean).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from net_specs import NetConfig
from net_specs.datasets import VOC_CLASSES, VOC_MEAN
from solvers.inference import batch, predictor as infer
from common.image import caffe_image
from common.palette import (distinct_palette, label_image, palette_for, voc_palette)
from solvers.inference.visualize import MARGIN, legend, present_classes, side_by_side
from tests import seg_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = "1/16"
PERSON, SOFA, AEROPLANE = 15, 18, 1
VOC_MAPPING = {"score_fr": {0: AEROPLANE, 1: SOFA, 2: PERSON}}
# SIFT Flow: red -> sky (27) / sky (0); green -> tree (31) / vertical (2); blue -> sea (24) / horizontal (1)
SIFT_MAPPING = {"score_fr_sem": {0: 24, 1: 31, 2: 27}, "score_fr_geo": {0: 1, 1: 2, 2: 0}}


@pytest.fixture(scope="module")
def voc_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "voc-fcn32s-narrow.caffemodel"
    seg_fixtures.make_weights("voc-fcn32s", path, VOC_MAPPING)
    return str(path)


@pytest.fixture(scope="module")
def predictor(voc_weights):
    return infer.Predictor.from_model(NetConfig.of("voc-fcn32s", width=1 / 16), voc_weights, batch_size=4)


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", "solvers.infer", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def uniform(h, w, rgb):
    return np.tile(np.array(rgb, np.uint8), (h, w, 1))


def write_inputs(folder):
    """Images of several sizes and formats; returns {stem: (rgb as decoded, class)}."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(uniform(37, 53, (255, 0, 0))).save(folder / "a_red.jpg", quality=95)
    Image.fromarray(uniform(48, 64, (0, 0, 255))).save(folder / "b_blue.png")
    Image.fromarray(uniform(48, 64, (0, 255, 0))).save(folder / "c_green.png")
    Image.new("L", (20, 30), 128).save(folder / "d_grey.png")
    rgba = np.dstack([uniform(25, 25, (255, 0, 0)), np.full((25, 25), 100, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "e_rgba.png")
    (folder / "notes.txt").write_text("not an image, not picked up")
    decoded = {p.stem: np.asarray(Image.open(p).convert("RGB"))
               for p in sorted(folder.iterdir()) if p.suffix != ".txt"}
    classes = {"a_red": PERSON, "b_blue": AEROPLANE, "c_green": SOFA, "d_grey": AEROPLANE,
               "e_rgba": PERSON}
    return {stem: (decoded[stem], classes[stem]) for stem in decoded}


# ------------------------------------------------------------------ the CLI

def test_cli_sizes_formats_palette_viz_scores(voc_weights, tmp_path):
    expected = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    proc = run_cli("voc-fcn32s", voc_weights, tmp_path / "in", "--out", out, "--width", WIDTH,
                   "--save-scores", "--cpu")
    assert proc.returncode == 0, proc.stderr
    assert "segmented 5 image(s)" in proc.stdout
    # grey and RGBA are converted with a warning naming the file
    assert "d_grey.png: grey image (mode L) converted to RGB" in proc.stderr
    assert "e_rgba.png: RGBA image (mode RGBA) converted to RGB" in proc.stderr
    # the two 64x48 images share one forward
    assert "batch of 2: b_blue.png, c_green.png" in proc.stderr
    written = sorted(os.listdir(out))
    assert written == sorted(f"{stem}{suffix}" for stem in expected
                             for suffix in (".png", "_viz.png", "_scores.npy"))
    voc = voc_palette()
    for stem, (rgb, cls) in expected.items():
        h, w = rgb.shape[:2]
        label = Image.open(out / f"{stem}.png")
        assert label.mode == "P" and label.size == (w, h)
        palette = np.array(label.getpalette()[:256 * 3]).reshape(-1, 3)
        np.testing.assert_array_equal(palette[:21], voc[:21])
        assert tuple(palette[PERSON]) == (192, 128, 128)
        labels = np.asarray(label)
        assert (labels == cls).all(), (stem, np.unique(labels))
        scores = np.load(out / f"{stem}_scores.npy")
        assert scores.shape == (21, h, w) and scores.dtype == np.float32
        np.testing.assert_array_equal(scores.argmax(0), labels)
        viz = np.asarray(Image.open(out / f"{stem}_viz.png"))
        assert viz.shape[1] > 2 * w and viz.shape[0] >= h
        np.testing.assert_array_equal(viz[:h, :w], rgb)                   # the image
        blend = np.round(0.5 * rgb + 0.5 * voc[cls]).astype(np.uint8)    # the overlay
        np.testing.assert_array_equal(viz[:h, w:2 * w], blend)
        # the legend: one swatch (outlined in black), the predicted class only
        assert swatch_runs(viz[:, 2 * w + MARGIN + 2]) == [(0, 0, 0), tuple(voc[cls]), (0, 0, 0)]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_cli_bad_images_stop_or_keep_going(voc_weights, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(uniform(40, 40, (255, 0, 0))).save(src / "a_good.png")
    (src / "b_empty.png").write_bytes(b"")
    buf = src / "c_trunc.jpg"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(buf)
    data = buf.read_bytes()
    buf.write_bytes(data[:len(data) // 2])         # a valid header: fails only when decoded
    (src / "d_text.png").write_text("certainly not a PNG")
    Image.fromarray(uniform(40, 40, (0, 255, 0))).save(src / "e_good.png")

    proc = run_cli("voc-fcn32s", voc_weights, src, "--out", tmp_path / "stop", "--width", WIDTH)
    assert proc.returncode == 2
    assert "b_empty.png" in proc.stderr and "empty file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "stop" / "a_good.png").exists()           # stopped before any forward

    out = tmp_path / "keep"
    proc = run_cli("voc-fcn32s", voc_weights, src, tmp_path / "missing.jpg", "--out", out,
                   "--width", WIDTH, "--keep-going")
    assert proc.returncode == 3, proc.stderr
    assert "4 image(s) failed" in proc.stderr
    for name in ("b_empty.png: empty file", "c_trunc.jpg: image file is truncated",
                 "d_text.png: not an image", "missing.jpg: no such file"):
        assert name in proc.stderr
    assert sorted(os.listdir(out)) == ["a_good.png", "a_good_viz.png", "e_good.png", "e_good_viz.png"]
    assert (np.asarray(Image.open(out / "e_good.png")) == SOFA).all()


def test_cli_truncated_image_without_keep_going(voc_weights, tmp_path):
    src = tmp_path / "t.jpg"
    Image.fromarray(np.random.RandomState(1).randint(0, 255, (64, 64, 3), np.uint8)).save(src)
    data = src.read_bytes()
    src.write_bytes(data[:len(data) // 2])
    assert infer.image_size(str(src)) == (64, 64)   # the header reads; the pixels do not
    proc = run_cli("voc-fcn32s", voc_weights, src, "--out", tmp_path / "o", "--width", WIDTH)
    assert proc.returncode == 2 and "t.jpg" in proc.stderr and "truncated" in proc.stderr
    assert not (tmp_path / "o" / "t.png").exists()
    with pytest.raises(infer.BadImage, match="truncated"):
        infer.load_image(str(src))
    (tmp_path / "head.jpg").write_bytes(data[:300])  # not even a header
    with pytest.raises(infer.BadImage, match="head.jpg"):
        infer.image_size(str(tmp_path / "head.jpg"))


def test_cli_weights_and_model_errors(voc_weights, tmp_path):
    img = tmp_path / "x.png"
    Image.fromarray(uniform(8, 8, (0, 0, 0))).save(img)
    proc = run_cli("voc-fcn32s", tmp_path / "absent.caffemodel", img, "--out", tmp_path / "o")
    assert proc.returncode == 2 and "absent.caffemodel" in proc.stderr
    proc = run_cli("pascalcontext-fcn32s", voc_weights, img, "--out", tmp_path / "o",
                   "--width", WIDTH)                              # 60 classes, not 21
    assert proc.returncode == 2 and "score_fr" in proc.stderr and "shape" in proc.stderr
    assert "voc-fcn32s-narrow.caffemodel" in proc.stderr
    proc = run_cli("nyud-fcn32s-color-hha", voc_weights, img, "--out", tmp_path / "o")
    assert proc.returncode == 2 and "inputs" in proc.stderr


def test_cli_siftflow_two_heads(tmp_path):
    weights = tmp_path / "siftflow.caffemodel"
    seg_fixtures.make_weights("siftflow-fcn32s", weights, SIFT_MAPPING)
    Image.fromarray(uniform(30, 41, (255, 0, 0))).save(tmp_path / "red.png")
    out = tmp_path / "out"
    proc = run_cli("siftflow-fcn32s", weights, tmp_path / "red.png", "--out", out,
                   "--width", WIDTH, "--save-scores")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted(
        f"red_{head}{suffix}" for head in ("sem", "geo")
        for suffix in (".png", "_viz.png", "_scores.npy"))
    for head, n, cls in (("sem", 33, 27), ("geo", 3, 0)):
        label = Image.open(out / f"red_{head}.png")
        assert label.mode == "P" and label.size == (41, 30)
        assert (np.asarray(label) == cls).all()
        palette = np.array(label.getpalette()[:3 * n]).reshape(-1, 3)
        np.testing.assert_array_equal(palette, distinct_palette(n))     # not the VOC colours
        assert np.load(out / f"red_{head}_scores.npy").shape == (n, 30, 41)


# --------------------------------------------------------- the function API

def test_segment_function_and_spatial_prediction(predictor):
    image = uniform(96, 256, (255, 0, 0))
    image[:, 128:] = (0, 0, 255)
    labels, scores = infer.segment(predictor.net, image, VOC_MEAN)
    assert labels.shape == (96, 256) and scores.shape == (21, 96, 256)
    # max pooling and x32 bilinear upsampling blur the border over < 64 px
    assert (labels[:, :64] == PERSON).all() and (labels[:, -64:] == AEROPLANE).all()
    assert set(np.unique(labels)) == {PERSON, AEROPLANE}
    labels2, _ = predictor.segment(Image.fromarray(image))
    np.testing.assert_array_equal(labels, labels2)


def test_predictor_batches_equal_sizes(predictor):
    images = [uniform(33, 47, c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    batched = predictor.predict(images)
    assert predictor.net.blobs["data"].data.shape == (3, 3, 33, 47)
    for image, result, cls in zip(images, batched, (PERSON, SOFA, AEROPLANE)):
        labels, scores = result[""]
        single, single_scores = predictor.segment(image)
        np.testing.assert_array_equal(labels, single)
        np.testing.assert_allclose(scores, single_scores, rtol=1e-5, atol=1e-4)
        assert (labels == cls).all()
    with pytest.raises(ValueError, match="equal-size"):
        predictor.predict([uniform(8, 8, (0, 0, 0)), uniform(9, 8, (0, 0, 0))])


def test_caffe_image_is_bgr_minus_mean_chw():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    x = caffe_image(rgb, (1, 2, 3))
    assert x.shape == (3, 2, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0, 0], [30 - 1, 20 - 2, 10 - 3])


def test_run_collides_stems_and_writes_outputs(predictor, tmp_path):
    Image.fromarray(uniform(16, 16, (0, 255, 0))).save(tmp_path / "x.png")
    Image.fromarray(uniform(16, 16, (255, 0, 0))).save(tmp_path / "x.jpg", quality=95)
    log = []
    done, failures = batch.run(predictor, [str(tmp_path / "x.png"), str(tmp_path / "x.jpg")],
                               str(tmp_path / "out"), log=log.append)
    assert done == 2 and failures == []
    assert (np.asarray(Image.open(tmp_path / "out" / "x_png.png")) == SOFA).all()
    assert (np.asarray(Image.open(tmp_path / "out" / "x_jpg.png")) == PERSON).all()


def test_viz_name_of_one_image_is_not_another_images_label_map(predictor, tmp_path):
    """x.jpg's visualisation x_viz.png and x_viz.jpg's label map x_viz.png: four files, not three."""
    Image.fromarray(uniform(16, 16, (255, 0, 0))).save(tmp_path / "x.jpg", quality=95)
    Image.fromarray(uniform(16, 16, (0, 255, 0))).save(tmp_path / "x_viz.jpg", quality=95)
    out = tmp_path / "out"
    done, failures = batch.run(predictor, [str(tmp_path)], str(out), log=lambda m: None)
    assert done == 2 and failures == []
    assert sorted(os.listdir(out)) == ["x.png", "x_viz.png", "x_viz_2.png", "x_viz_2_viz.png"]
    assert (np.asarray(Image.open(out / "x.png")) == PERSON).all()
    assert (np.asarray(Image.open(out / "x_viz_2.png")) == SOFA).all()
    assert Image.open(out / "x_viz.png").mode == "RGB"          # x.jpg's visualisation


def test_hidden_files_in_a_directory_are_skipped(predictor, tmp_path):
    Image.fromarray(uniform(16, 16, (255, 0, 0))).save(tmp_path / "a.jpg", quality=95)
    (tmp_path / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / ".hidden.png").write_bytes(b"not a png")
    done, failures = batch.run(predictor, [str(tmp_path)], str(tmp_path / "out"),
                               log=lambda m: None)
    assert done == 1 and failures == []
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "a_viz.png"]


def test_non_finite_weights_and_scores_are_refused(voc_weights, tmp_path):
    from caffe.proto import caffe_pb2
    param = caffe_pb2.NetParameter()
    param.ParseFromString(open(voc_weights, "rb").read())
    layer = next(layer for layer in param.layer if layer.name == "score_fr")
    layer.blobs[0].data[0] = float("nan")
    bad = tmp_path / "diverged.caffemodel"
    bad.write_bytes(param.SerializeToString())
    image = tmp_path / "a.jpg"
    Image.fromarray(uniform(16, 16, (255, 0, 0))).save(image, quality=95)
    r = run_cli("voc-fcn32s", bad, image, "--width", WIDTH, "--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert f"{bad}: non-finite weights (NaN/inf) in layer(s) score_fr" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out" / "a.png").exists()
    net = infer.Predictor.from_model(NetConfig.of("voc-fcn32s", width=1 / 16), voc_weights).net
    net.params["score_fr"][1].data[...] = np.inf            # finite file, overflowing scores
    with pytest.raises(infer.InferError, match="non-finite value.*diverged or corrupt"):
        infer.forward(net, np.zeros((1, 3, 16, 16), np.float32))


def test_out_checked_before_any_work(voc_weights, tmp_path):
    image = tmp_path / "a.jpg"
    Image.fromarray(uniform(16, 16, (255, 0, 0))).save(image, quality=95)
    taken = tmp_path / "file"
    taken.write_text("x")
    for out, words in ((taken, "is a file; expected a directory"),
                       (taken / "sub", f"{taken} is a file, not a directory")):
        r = run_cli("voc-fcn32s", voc_weights, image, "--width", WIDTH, "--out", out)
        assert r.returncode == 2 and words in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert taken.read_text() == "x"


# ---------------------------------------------------- palettes and legends

def test_voc_palette_entries():
    p = voc_palette()
    assert p.shape == (256, 3)
    assert tuple(p[0]) == (0, 0, 0) and tuple(p[1]) == (128, 0, 0)
    assert tuple(p[15]) == (192, 128, 128) and tuple(p[255]) == (224, 224, 192)
    assert len({tuple(c) for c in p}) == 256


def test_palette_choice():
    np.testing.assert_array_equal(palette_for(21, True), voc_palette())
    np.testing.assert_array_equal(palette_for(60, True), voc_palette())
    np.testing.assert_array_equal(palette_for(40, False)[:40], distinct_palette(40))
    for n in (2, 3, 33, 40, 256):
        assert len({tuple(c) for c in distinct_palette(n)}) == n
    assert palette_for(460, False).shape == (460, 3)


def test_label_image_modes():
    labels = np.array([[0, 1], [2, 20]])
    img = label_image(labels, voc_palette())
    assert img.mode == "P" and np.asarray(img).tolist() == labels.tolist()
    big = label_image(np.array([[0, 459]]), palette_for(460, False))
    assert big.mode == "I;16" and np.asarray(big).tolist() == [[0, 459]]


def swatch_runs(column):
    """Colours down a pixel column, consecutive repeats and white dropped."""
    runs = []
    for colour in map(tuple, column):
        if colour != (255, 255, 255) and (not runs or runs[-1] != colour):
            runs.append(colour)
    return runs


def test_legend_lists_present_classes_only():
    labels = np.zeros((50, 60), int)
    labels[:, 30:] = 15
    assert present_classes(labels) == [0, 15]
    one = legend([15], VOC_CLASSES, voc_palette(), 50)
    two = legend([0, 15], VOC_CLASSES, voc_palette(), 50)
    assert two.height > one.height
    assert swatch_runs(np.asarray(one)[:, MARGIN + 2]) == [(0, 0, 0), (192, 128, 128), (0, 0, 0)]
    assert swatch_runs(np.asarray(two)[:, MARGIN + 2]) == [(0, 0, 0), (192, 128, 128), (0, 0, 0)]
    viz = side_by_side(uniform(50, 60, (10, 20, 30)), labels, voc_palette(), VOC_CLASSES)
    assert viz.size == (120 + two.width, max(50, two.height))
    # the text is drawn: dark pixels right of the swatches
    assert (np.asarray(two)[:, 3 * MARGIN + 12:] < 128).any()


@pytest.mark.parametrize("variant,top", [("color", "color"), ("hha", "hha")])
def test_inference_preprocesses_as_the_training_layer(variant, top, tmp_path):
    """NYUD colour (RGB -> BGR) and HHA (stored channel order, its own mean):
    Predictor's input blob equals what the NYUD data layer trains on."""
    from data.layouts import write_nyud
    from layers.nyud import NYUDReader
    from net_specs import MODELS
    model = MODELS[f"nyud-fcn32s-{variant}"]
    dataset = model.get_dataset()
    root = str(tmp_path / "nyud")
    write_nyud(root, [("1", (12, 10))], split="trainval")
    weights = tmp_path / "w.caffemodel"
    seg_fixtures.make_weights(model, weights, {}, dataset=dataset)
    predictor = infer.Predictor.from_model(NetConfig.of(model, width=1 / 16), str(weights), warn=lambda m: None)
    reader = NYUDReader.from_param_str(json.dumps({"root": root, "split": "trainval", "tops": [top, "label"],
                                                   "n_classes": 40}))
    path = reader.path(top, "1")
    trained = getattr(reader, "load_" + top)(path)
    np.testing.assert_array_equal(predictor.preprocess(infer.load_image(path)), trained)
