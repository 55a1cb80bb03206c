"""ONNX export: onnxruntime reproduces Caffe's scores on every FCN family
(narrow nets, random weights, bilinear upsampling) at two input sizes from
one exported file (dynamic height/width), and the CLI writes a checked file."""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe

from common.atomic import atomic_write
from net_specs import build
from net_specs.models import MODELS
from surgery.bilinear import interp, upsampling_layers
from surgery.errors import SurgeryError
from surgery.onnx_export import to_onnx
from netio.files import read_prototxt

# onnx/onnxruntime are imported inside the tests (a missing extra fails them, never skips):
# the module still collects without the extras, so `-m 'not onnx'` deselects these cleanly.
pytestmark = pytest.mark.onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 1 / 16
SIZES = ((64, 80), (97, 71))
FAMILIES = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet",
            "voc-fcn-googlenet", "siftflow-fcn8s", "nyud-fcn32s-color-hha", "nyud-fcn32s-color-d")


def _random_net(model, tmp_path, seed=0):
    path = str(tmp_path / f"{model}.prototxt")
    atomic_write(path, str(build(MODELS[model], "deploy", width=WIDTH, size=(64, 64))))
    net = caffe.Net(path, caffe.TEST)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        w = blobs[0].data
        fan_in = int(np.prod(w.shape[1:])) or 1
        w[...] = rng.standard_normal(w.shape) * np.sqrt(2.0 / fan_in)
        for b in blobs[1:]:
            b.data[...] = rng.standard_normal(b.data.shape) * 0.1
    interp(net, upsampling_layers(net))
    return path, net


@pytest.mark.parametrize("model", FAMILIES)
def test_onnxruntime_matches_caffe(model, tmp_path):
    import onnxruntime
    path, net = _random_net(model, tmp_path)
    graph = to_onnx(read_prototxt(path), net, model)
    session = onnxruntime.InferenceSession(graph.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == list(net.inputs)
    rng = np.random.default_rng(1)
    for h, w in SIZES:
        feed = {}
        for name in names:
            c = net.blobs[name].data.shape[1]
            feed[name] = (rng.standard_normal((1, c, h, w)) * 50).astype(np.float32)
            net.blobs[name].reshape(1, c, h, w)
            net.blobs[name].data[...] = feed[name]
        net.forward()
        results = session.run(list(net.outputs), feed)
        for top, got in zip(net.outputs, results):
            want = net.blobs[top].data
            assert got.shape == want.shape == (1, want.shape[1], h, w), (top, got.shape)
            scale = np.abs(want).max()
            assert scale > 0
            assert np.abs(got - want).max() <= 1e-4 * scale, (model, top, (h, w))


def test_unsupported_layer_is_named(tmp_path):
    path, net = _random_net("voc-fcn32s", tmp_path)
    param = read_prototxt(path)
    param.layer[3].type = "TanH"
    with pytest.raises(SurgeryError, match=f"layer '{param.layer[3].name}' of type TanH"):
        to_onnx(param, net)


def test_export_cli_writes_a_checked_model(tmp_path):
    import onnx
    path, net = _random_net("voc-fcn8s", tmp_path)
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    out = tmp_path / "out" / "fcn8s.onnx"
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    proc = subprocess.run([sys.executable, "-m", "surgery", "export-onnx", "voc-fcn8s", weights,
                           "--out", str(out), "--width", "1/16"], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in model.graph.output] == ["score"]
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 21, "score_height", "score_width"]
    assert os.listdir(out.parent) == ["fcn8s.onnx"]             # no temporary left behind
    bad = subprocess.run([sys.executable, "-m", "surgery", "export-onnx", "voc-fcn16s", weights,
                          "--out", str(tmp_path / "x.onnx"), "--width", "1/16"], env=env,
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and not (tmp_path / "x.onnx").exists()
    assert bad.stderr.startswith("surgery: error:") and len(bad.stderr.strip().splitlines()) == 1
    assert "no parameters for layer(s) upscore16" in bad.stderr


@pytest.mark.slow
def test_full_size_released_format_exports_and_matches(tmp_path):
    """`export-onnx MODEL published`: a full-size stand-in of the released file
    (weights/published/, verified by parsing) exported, then run by onnxruntime."""
    import onnxruntime
    from surgery.published import get_released
    from tests.published_fixtures import write_stand_in
    released = get_released("voc-fcn8s-atonce")
    write_stand_in(released.model, released.path(str(tmp_path / "weights" / "published")),
                   width=1.0)
    out = tmp_path / "atonce.onnx"
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2", http_proxy="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "surgery", "export-onnx", released.model,
                           "published", "--out", str(out)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    path = str(tmp_path / "deploy.prototxt")
    atomic_write(path, str(build(MODELS[released.model], "deploy", size=(72, 88))))
    net = caffe.Net(path, released.path(str(tmp_path / "weights" / "published")), caffe.TEST)
    x = (np.random.default_rng(2).standard_normal((1, 3, 72, 88)) * 50).astype(np.float32)
    net.blobs["data"].data[...] = x
    want = net.forward()["score"]
    del net
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["score"], {"data": x})
    assert got.shape == want.shape == (1, 21, 72, 88)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_layers_beyond_the_fcn_families(tmp_path):
    """The exported layers no FCN here uses: leaky ReLU, Eltwise PROD of three
    and MAX, Scale with a bias, InnerProduct on a flattened blob, padded pooling."""
    import onnxruntime
    from caffe import layers as L, params as P
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 9, 11]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1, group=1)
    n.leaky = L.ReLU(n.conv, negative_slope=0.1)
    n.prod = L.Eltwise(n.leaky, n.conv, n.leaky, operation=P.Eltwise.PROD)
    n.max = L.Eltwise(n.prod, n.conv, operation=P.Eltwise.MAX)
    n.scaled = L.Scale(n.max, bias_term=True)
    n.pool = L.Pooling(n.scaled, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
    n.fc = L.InnerProduct(n.pool, num_output=5)
    path = str(tmp_path / "extra.prototxt")
    atomic_write(path, str(n.to_proto()))
    net = caffe.Net(path, caffe.TEST)
    rng = np.random.default_rng(3)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.standard_normal(b.data.shape)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    net.blobs["data"].data[...] = x
    want = net.forward()["fc"].copy()
    graph = to_onnx(read_prototxt(path), net)
    session = onnxruntime.InferenceSession(graph.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (got,) = session.run(["fc"], {"data": x})
    assert got.shape == want.shape == (2, 5)
    out_dims = [d.dim_param or d.dim_value for d in graph.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch", 5]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
