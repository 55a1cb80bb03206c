"""The released-model table: every record names a model we generate, the
downloader verifies by checksum or full parse (offline here), and files in
the released format load by layer name into our val and deploy nets."""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe

from common.atomic import atomic_write
from net_specs import build
from net_specs.models import MODELS
from netio.nets import load_weights
from surgery.download import download
from surgery.errors import SurgeryError
from surgery.published import RELEASED_LIST, get_released
from tests.published_fixtures import write_stand_in

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
WIDTH = 1 / 16


def test_table_names_the_fourteen_released_models():
    assert len(RELEASED_LIST) == 14
    assert len({r.stem for r in RELEASED_LIST}) == 14
    for r in RELEASED_LIST:
        assert MODELS[r.model].published, r.model
        assert r.url == f"http://dl.caffe.berkeleyvision.org/{r.stem}.caffemodel"
    assert get_released("voc-fcn8s-published") is get_released("voc-fcn8s")
    assert get_released("voc-fcn8s").paper_mean_iu == 65.5
    assert get_released("voc-fcn8s").split == ("seg11valid", 736)
    assert get_released("siftflow-fcn16s").split == ("test", 200)
    with pytest.raises(ValueError, match="released: voc-fcn32s-published"):
        get_released("voc-fcn-googlenet")


@pytest.mark.parametrize("released", RELEASED_LIST, ids=lambda r: r.model)
def test_table_sizes_are_the_full_width_nets_parameter_counts(released, tmp_path):
    """The size column (parameters x 4 bytes) is our generated full-width
    net's: a wrong layer shape here would also stop the real file loading."""
    net = _net(released.model, "deploy", tmp_path, width=1.0)
    count = sum(int(np.prod(b.data.shape)) for blobs in net.params.values() for b in blobs)
    assert count == released.params
    assert released.size_mb == pytest.approx(count * 4 / 1e6)


def test_paper_scores_name_their_source():
    """VOC from the reference README, the rest from the CVPR tables; a
    missing score says which table lacks it."""
    for r in RELEASED_LIST:
        assert r.source.startswith("reference README" if r.dataset == "voc" else "CVPR 2015 Table")
        if r.paper_mean_iu is None:
            assert "only" in r.source, r.model
    assert get_released("pascalcontext-fcn8s").paper_mean_iu == 35.1
    assert get_released("nyud-fcn32s-color-hha").paper_mean_iu == 32.8
    assert get_released("siftflow-fcn16s").paper_mean_iu == 39.5


def _net(model, phase, tmp_path, width=WIDTH):
    path = tmp_path / f"{model}-{phase}.prototxt"
    atomic_write(str(path), str(build(MODELS[model], phase, width=width, size=(64, 64))))
    if phase == "deploy":
        return caffe.Net(str(path), caffe.TEST)
    from surgery.io import load_for_surgery
    return load_for_surgery(str(path), caffe.TEST, size=64)


@pytest.mark.parametrize("released", RELEASED_LIST, ids=lambda r: r.model)
def test_released_format_loads_by_name_into_val_and_deploy(released, tmp_path):
    weights = tmp_path / released.filename
    stored = write_stand_in(released.model, weights, width=WIDTH)
    for phase in ("val", "deploy"):
        net = _net(released.model, phase, tmp_path)
        missing = load_weights(net, str(weights))
        assert missing == [], (phase, missing)
        for name, blobs in net.params.items():
            assert [tuple(b.data.shape) for b in blobs] == stored[name]
        # the values came over, not just the shapes
        name = next(n for n in net.params if n.startswith("score"))
        assert np.abs(net.params[name][0].data).sum() > 0


def test_download_keeps_a_present_file_verified_by_parsing(tmp_path, capsys):
    released = get_released("siftflow-fcn16s")
    assert released.sha1 is None                       # no published checksum
    write_stand_in(released.model, released.path(str(tmp_path)), width=WIDTH)
    assert download(released.name, str(tmp_path)) == released.path(str(tmp_path))
    assert "already present and verified" in capsys.readouterr().err


def test_download_of_a_corrupt_file_offline_is_one_line_exit_2(tmp_path):
    released = get_released("voc-fcn32s")
    path = released.path(str(tmp_path))
    bad = b"\x0a\xff not a caffemodel"
    with open(path, "wb") as f:
        f.write(bad)
    with pytest.raises(SurgeryError):
        download(released.name, str(tmp_path))  # no network here: the re-download fails
    proc = subprocess.run([sys.executable, "-m", "surgery", "download", released.name,
                           "--dir", str(tmp_path)], env=dict(ENV, http_proxy="http://127.0.0.1:9"),
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("surgery: error: cannot download")
    assert open(path, "rb").read() == bad                # the bad file was not replaced by a partial


def test_published_lists_urls_and_scores():
    proc = subprocess.run([sys.executable, "-m", "surgery", "published"], env=ENV,
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 16                              # header, 14 models, footnote
    assert any("voc-fcn8s-published" in l and "65.5" in l and "538.0" in l and "sha1" in l
               and l.endswith("fcn8s-heavy-pascal.caffemodel") for l in lines)


# The reference FCN-8s's parameter shapes (PASCAL VOC, 21 classes), by hand.
FCN8S_SHAPES = {
    "conv1_1": [(64, 3, 3, 3), (64,)], "conv5_3": [(512, 512, 3, 3), (512,)],
    "fc6": [(4096, 512, 7, 7), (4096,)], "fc7": [(4096, 4096, 1, 1), (4096,)],
    "score_fr": [(21, 4096, 1, 1), (21,)], "upscore2": [(21, 21, 4, 4)],
    "score_pool4": [(21, 512, 1, 1), (21,)], "upscore_pool4": [(21, 21, 4, 4)],
    "score_pool3": [(21, 256, 1, 1), (21,)], "upscore8": [(21, 21, 16, 16)],
}


@pytest.mark.slow
def test_full_size_fcn8s_stand_in_loads_into_deploy(tmp_path):
    """A >512 MiB file in the released format (134M parameters) loads by name."""
    weights = tmp_path / "fcn8s-heavy-pascal.caffemodel"
    stored = write_stand_in("voc-fcn8s", weights, width=1.0)
    for name, shapes in FCN8S_SHAPES.items():
        assert stored[name] == shapes, name
    assert os.path.getsize(weights) > 512 * 2 ** 20
    # the table's size: the parameters' bytes plus a few kB of layer records
    size = os.path.getsize(weights)
    assert 0 < size - 4 * get_released("voc-fcn8s").params < 64 * 1024, size
    net = _net("voc-fcn8s", "deploy", tmp_path, width=1.0)
    assert load_weights(net, str(weights)) == []
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((64, 3, 3, 3), dtype=np.float32) * 0.01
    np.testing.assert_array_equal(net.params["conv1_1"][0].data, expected)


def test_infer_with_published_weights_uses_the_released_file(tmp_path):
    """`solvers.infer MODEL published IMAGE` resolves to weights/published/<file>
    (verified, no download when present) and segments as with the path itself."""
    from PIL import Image
    released = get_released("voc-fcn16s")
    write_stand_in(released.model, released.path(str(tmp_path / "weights" / "published")),
                   width=WIDTH, scale=0.3)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(photo)
    env = dict(ENV, http_proxy="http://127.0.0.1:9")

    def infer(weights, out):
        return subprocess.run([sys.executable, "-m", "solvers.infer", "voc-fcn16s", weights,
                               str(photo), "--width", "1/16", "--out", out], env=env,
                              cwd=str(tmp_path), capture_output=True, text=True)
    by_name = infer("published", "by-name")
    assert by_name.returncode == 0, by_name.stderr
    assert "already present and verified" in by_name.stderr
    by_path = infer(released.path("weights/published"), "by-path")
    assert by_path.returncode == 0, by_path.stderr
    labels = np.asarray(Image.open(tmp_path / "by-name" / "photo.png"))
    assert labels.shape == (40, 52)
    np.testing.assert_array_equal(labels, np.asarray(Image.open(tmp_path / "by-path" / "photo.png")))
    for model, extra, message in (
            ("fcn8s", ["--classes", "21"], "no released weights for 'fcn8s'"),   # a template
            ("voc-fcn32s", [], "cannot download http://dl.caffe.berkeleyvision.org/")):  # offline
        proc = subprocess.run([sys.executable, "-m", "solvers.infer", model, "published",
                               str(photo), "--out", "x", *extra],
                              env=env, cwd=str(tmp_path), capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_readme_table_is_the_current_one():
    """The README shows `python -m surgery published --markdown` verbatim."""
    from surgery.published import markdown_table
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert markdown_table() in f.read()
