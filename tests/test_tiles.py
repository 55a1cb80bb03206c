"""Inference beyond one pass: tiles aligned to the net's stride and overlapping
by its receptive field give one pass's scores; a downscale is explicit."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import caffe

from net_specs import NetConfig, build, get_model
from netio import geometry
from solvers.inference import stitching as tiles
from common.image import caffe_image
from solvers.inference.predictor import Predictor, forward
from surgery.bilinear import interp, upsampling_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN = (104.00699, 116.66877, 122.67892)
WIDTH = 1 / 16


def random_fcn(tmp_path, model="voc-fcn8s", seed=0):
    """A narrow deploy FCN with He-scaled random weights, bilinear upsampling and
    non-zero skip scores, saved; returns (caffemodel path, net)."""
    proto = build(get_model(model), "deploy", width=WIDTH, size=(64, 64))
    path = tmp_path / f"{model}.prototxt"
    path.write_text(str(proto))
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        w = blobs[0].data
        w[...] = rng.normal(0, np.sqrt(2.0 / max(1, w.size // w.shape[0])), w.shape)
        for b in blobs[1:]:
            b.data[...] = rng.normal(0, 0.1, b.data.shape)
    interp(net, upsampling_layers(net))
    weights = tmp_path / f"{model}.caffemodel"
    net.save(str(weights))
    return str(weights), net, proto


def photo(height, width, seed=0):
    """A smooth random image (blobs of colour, like a photo rather than noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def test_geometry_of_the_published_nets():
    for name, align in (("voc-fcn32s", 32), ("voc-fcn16s", 32), ("voc-fcn8s", 32),
                        ("voc-fcn-alexnet", 32), ("voc-fcn-googlenet", 32)):
        got_align, margin = tiles.tile_geometry(build(get_model(name), "deploy", width=WIDTH, size=(64, 64)))
        assert got_align == align, name
        assert margin % align == 0 and margin >= 128, (name, margin)
    # VGG16: 404 px under fc7, +32 for the 64/32 deconvolution, half of it plus a stride
    assert tiles.tile_geometry(build(get_model("voc-fcn32s"), "deploy", width=WIDTH, size=(64, 64))) == (32, 256)


def test_blob_shapes_are_caffes_and_int_max_is_foreseen(tmp_path):
    _, net, proto = random_fcn(tmp_path)
    for h, w in ((1, 1), (37, 53), (375, 500), (500, 375)):
        shapes, _ = geometry.blob_shapes(proto, h, w)
        net.blobs["data"].reshape(1, 3, h, w)
        net.reshape()
        assert set(shapes) <= set(net.blobs)
        for name, shape in shapes.items():
            assert (1,) + shape == net.blobs[name].data.shape, (name, h, w)
    full = build(get_model("voc-fcn8s"), "deploy", size=(64, 64))
    # conv1_2's im2col: 64 x 3 x 3 per pixel of the 100-padded input
    assert geometry.largest_buffer(full, 375, 500) == 64 * 9 * (375 + 198) * (500 + 198)
    assert geometry.largest_buffer(full, 1500, 2000) > geometry.INT_MAX      # Caffe aborts here
    assert geometry.largest_buffer(full, 1400, 1400) < geometry.INT_MAX


@pytest.mark.parametrize("length", [1, 31, 32, 479, 480, 481, 700, 1500, 2000, 3001])
def test_windows_cover_exactly_and_start_aligned(length):
    side, margin, align = 480, 96, 32
    w = tiles.windows(length, side, margin, align)
    covered = np.zeros(length, int)
    for start, stop, c0, c1 in w:
        assert start % align == 0 and 0 <= start <= c0 < c1 <= stop <= length
        assert stop - start <= side
        assert c0 == 0 or c0 - start >= margin          # a cut edge keeps its margin
        assert c1 == length or stop - c1 >= margin
        covered[c0:c1] += 1
    assert (covered == 1).all()
    with pytest.raises(ValueError, match="no core"):
        tiles.windows(length, 192, 96, 32)
    with pytest.raises(ValueError, match="multiples of the alignment"):
        tiles.windows(length, 500, 96, 32)


def test_tiles_with_the_exact_margin_equal_one_pass(tmp_path):
    """Exact up to float rounding: scores within 1e-4 of one pass's, labels equal
    wherever the top two classes are not within that rounding."""
    _, net, proto = random_fcn(tmp_path)
    align, margin = tiles.tile_geometry(proto)
    chw = caffe_image(photo(700, 900), MEAN)

    def run(batch):
        return forward(net, batch, ("score",))
    whole = run(chw[None])["score"][0]
    side = 2 * margin + 2 * align
    assert len(tiles.windows(700, side, margin, align)) > 1           # really tiled in y and x
    stitched = tiles.stitched(run, chw, side, margin, align)["score"]
    assert stitched.shape == whole.shape
    scale = np.abs(whole).max()
    np.testing.assert_allclose(stitched, whole, atol=1e-4 * scale)
    top2 = np.sort(whole, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-3 * scale
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(stitched.argmax(0)[clear], whole.argmax(0)[clear])


def test_tiles_with_a_small_margin_differ_only_near_the_cuts(tmp_path):
    """The documented border effect: a margin below the exact one changes
    pixels within the exact margin of a cut, and nothing farther away."""
    _, net, proto = random_fcn(tmp_path)
    align, exact = tiles.tile_geometry(proto)
    chw = caffe_image(photo(400, 1400, seed=1), MEAN)

    def run(batch):
        return forward(net, batch, ("score",))
    whole = run(chw[None])["score"][0]
    side, margin = 640, 64
    stitched = tiles.stitched(run, chw, side, margin, align)["score"]
    cuts = [c0 for _, _, c0, _ in tiles.windows(1400, side, margin, align)[1:]]
    distance = np.min([np.abs(np.arange(1400) - c + 0.5) for c in cuts], axis=0)
    far = distance > exact
    scale = np.abs(whole).max()
    np.testing.assert_allclose(stitched[:, :, far], whole[:, :, far], atol=1e-4 * scale)
    assert not np.allclose(stitched[:, :, ~far], whole[:, :, ~far], atol=1e-4 * scale)


def test_predictor_tiles_or_downscales_beyond_max_pixels(tmp_path):
    weights, _, _ = random_fcn(tmp_path)
    rgb = photo(720, 1000, seed=2)
    one = Predictor.from_model(NetConfig.of("voc-fcn8s", width=WIDTH), weights)
    labels, scores = one.segment(rgb)
    tiled = Predictor.from_model(NetConfig.of("voc-fcn8s", width=WIDTH), weights, max_pixels=640 * 640)
    t_labels, t_scores = tiled.segment(rgb)
    assert t_scores.shape == scores.shape == (21, 720, 1000)
    assert (t_labels == labels).mean() > 0.95                # quarter-tile margin: a seam band differs
    small = Predictor.from_model(NetConfig.of("voc-fcn8s", width=WIDTH), weights, max_pixels=200 * 300,
                                 downscale=True)
    d_labels, d_scores = small.segment(rgb)
    assert d_scores.shape == (21, 720, 1000) and d_labels.shape == (720, 1000)
    assert (d_labels == labels).mean() > 0.5


def test_beyond_int_max_is_tiled_whatever_max_pixels_says(tmp_path):
    """--max-pixels larger than Caffe can take in one pass: tiles (or a
    downscale) within INT_MAX, instead of 'blob size exceeds INT_MAX'."""
    weights, _, _ = random_fcn(tmp_path)
    predictor = Predictor.from_model(NetConfig.of("voc-fcn8s", width=WIDTH), weights, max_pixels=10 ** 9)
    assert predictor.one_pass_fits(3000, 3000)
    # the full-width net's sizes, without building it (0.5 GB of weights, minutes of forward):
    # the forwards are recorded, not run
    full = build(get_model("voc-fcn8s"), "deploy", size=(64, 64))
    predictor.net_param = full
    assert not predictor.one_pass_fits(1500, 2000)
    assert predictor.one_pass_fits(375, 500)
    calls = []

    def recorded_forward(net, batch, blobs, input_name):
        calls.append(batch.shape)
        assert geometry.largest_buffer(full, *batch.shape[2:]) <= geometry.INT_MAX
        return {b: np.zeros((1, 21) + batch.shape[2:], np.float32) for b in blobs}
    import solvers.inference.predictor as infer
    original, infer.forward = infer.forward, recorded_forward
    try:
        result = predictor.predict_large(photo(1500, 2000))
    finally:
        infer.forward = original
    assert result[""][1].shape == (21, 1500, 2000) and len(calls) > 1


def test_a_failing_forward_does_not_end_a_keep_going_batch(tmp_path):
    """One image whose forward fails (memory, a net error) is listed as failed;
    the images after it are still segmented. Without --keep-going it stops."""
    from solvers.inference.batch import run
    from solvers.inference.predictor import InferError
    weights, _, _ = random_fcn(tmp_path)
    predictor = Predictor.from_model(NetConfig.of("voc-fcn8s", width=WIDTH), weights)
    for name, size in (("a", (60, 80)), ("b", (70, 90)), ("c", (50, 40))):
        Image.fromarray(photo(*size)).save(tmp_path / f"{name}.png")
    real = predictor.predict

    def predict(rgbs):
        if rgbs[0].shape[:2] == (70, 90):
            raise MemoryError("cannot allocate")
        return real(rgbs)
    predictor.predict = predict
    paths = [str(tmp_path / f"{n}.png") for n in "abc"]
    done, failures = run(predictor, paths, str(tmp_path / "out"), keep_going=True, log=lambda m: None)
    assert done == 2 and [p for p, _ in failures] == [paths[1]]
    assert "MemoryError" in failures[0][1]
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "a_viz.png", "c.png", "c_viz.png"]
    with pytest.raises(InferError, match="b.png: cannot allocate"):
        run(predictor, paths, str(tmp_path / "out2"), keep_going=False, log=lambda m: None)


def run_infer(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", "solvers.infer", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def test_cli_large_image_in_tiles_and_a_bad_image_does_not_end_the_batch(tmp_path):
    weights, _, _ = random_fcn(tmp_path)
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(photo(900, 1200, seed=3)).save(images / "big.jpg")
    Image.fromarray(photo(100, 120, seed=4)).save(images / "small.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    r = run_infer("voc-fcn8s", weights, images, "--out", out, "--width", "1/16",
                  "--max-pixels", 400 * 400, "--keep-going")
    assert r.returncode == 3, r.stderr
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    assert np.asarray(Image.open(out / "big.png")).shape == (900, 1200)
    assert np.asarray(Image.open(out / "small.png")).shape == (100, 120)
    r = run_infer("voc-fcn8s", weights, images / "big.jpg", "--out", out / "d", "--width", "1/16",
                  "--max-pixels", 300 * 300, "--downscale")
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(out / "d" / "big.png")).shape == (900, 1200)
    r = run_infer("voc-fcn8s", weights, images / "big.jpg", "--max-pixels", "0")
    assert r.returncode == 2 and "--max-pixels must be at least 1" in r.stderr


@pytest.mark.slow
def test_3000x3000_at_narrow_width_in_bounded_memory(tmp_path):
    """One pass would need 7.9 GB; the default tiles stay far below."""
    weights, _, _ = random_fcn(tmp_path)
    Image.fromarray(photo(3000, 3000, seed=5)).save(tmp_path / "huge.jpg")
    code = ("import sys; from common.report import peak_rss_mb; from solvers.inference.cli import main; "
            "rc = main(sys.argv[1:]); print('peak_mb', int(peak_rss_mb())); sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    r = subprocess.run([sys.executable, "-c", code, "voc-fcn8s", weights, tmp_path / "huge.jpg",
                        "--out", tmp_path / "out", "--width", "1/16"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr
    peak = int(r.stdout.split("peak_mb")[1])
    assert peak < 2500, peak
    assert np.asarray(Image.open(tmp_path / "out" / "huge.png")).shape == (3000, 3000)
