"""Net surgery against real caffe.Net: convolutionalisation is exact, bilinear
deconvolutions interpolate, and bad files raise instead of aborting Caffe."""
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import caffe
import numpy as np
import pytest
from caffe import coord_map, layers as L, params as P
from caffe.proto import caffe_pb2

from surgery.bilinear import bilinear_kernel, interp, upsampling_layers
from surgery.download import IMAGENET_WEIGHTS, fetch
from surgery.errors import SurgeryError
from netio.errors import NetIOError
from netio.files import read_caffemodel as read_weights
from netio.nets import Caffemodel, load_net, net_from_param, save_weights
from surgery.expand import expand_score, init_color_depth
from surgery.io import load_for_surgery, replace_data_layers
from surgery.transplant import COERCED, COPIED, DROPPED, UNTOUCHED, transplant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = (2, 2, 3, 3, 3)            # convolutions per VGG16 stage
WIDTHS = (4, 4, 6, 6, 8)            # tiny channel counts
FC, CLASSES, CLS_SIZE = 16, 5, 64   # 64 px input -> pool5 2x2: fc6 is a 2x2 conv
POOL5 = CLS_SIZE // 32


# ---------------------------------------------------------------- helpers

def vgg_trunk(n, bottom, suffix=""):
    """conv1_1 .. pool5 with VGG16's layer names (and an optional suffix)."""
    top = bottom
    for stage, (convs, width) in enumerate(zip(BLOCKS, WIDTHS), 1):
        for i in range(1, convs + 1):
            name = f"conv{stage}_{i}{suffix}"
            n[name] = L.Convolution(top, num_output=width, kernel_size=3, pad=1)
            n[f"relu{stage}_{i}{suffix}"] = L.ReLU(n[name], in_place=True)
            top = n[name]
        n[f"pool{stage}{suffix}"] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        top = n[f"pool{stage}{suffix}"]
    return top


def vgg_net(size=CLS_SIZE, conv_head=False, fc6_out=FC, suffix="", extra_stream=False):
    """The tiny VGG classifier (InnerProduct head) or its convolutional form."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
    for s in [suffix] + ([""] if extra_stream else []):
        top = vgg_trunk(n, n.data, s)
        for name, out, k in (("fc6", fc6_out, POOL5), ("fc7", FC, 1), ("fc8", CLASSES, 1)):
            if conv_head:
                n[name + s] = L.Convolution(top, num_output=out, kernel_size=k)
            else:
                n[name + s] = L.InnerProduct(top, num_output=out)
            top = n[name + s]
            if name != "fc8":
                n[name.replace("fc", "relu") + s] = L.ReLU(top, in_place=True)
                n[name.replace("fc", "drop") + s] = L.Dropout(top, in_place=True)
    return n


def write(path, spec):
    path.write_text(str(spec.to_proto()))
    return str(path)


def make_net(tmp_path, spec, name="net", phase=caffe.TEST):
    return caffe.Net(write(tmp_path / f"{name}.prototxt", spec), phase)


def randomize(net, seed=0):
    """He-scaled random weights so activations survive ten ReLU layers."""
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        w = blobs[0].data
        w[...] = rng.normal(0, np.sqrt(2.0 / (w.size // w.shape[0])), w.shape)
        for b in blobs[1:]:
            b.data[...] = rng.normal(0, 0.1, b.data.shape)


def forward(net, seed=1):
    data = net.blobs["data"].data
    data[...] = np.random.default_rng(seed).normal(0, 1, data.shape)
    return net.forward()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """(prototxt, caffemodel) of the random tiny VGG classifier."""
    d = tmp_path_factory.mktemp("classifier")
    proto = write(d / "vgg_deploy.prototxt", vgg_net())
    net = caffe.Net(proto, caffe.TEST)
    randomize(net)
    weights = str(d / "vgg.caffemodel")
    net.save(weights)
    return proto, weights


def fcn_from(classifier, tmp_path, size, **kw):
    src = load_net(*classifier)
    dst = make_net(tmp_path, vgg_net(size, conv_head=True, **kw), "fcn")
    return src, dst


# ------------------------------------------------------- convolutionalisation

def test_fcn_at_classifier_size_equals_fc8_logits(classifier, tmp_path, capsys):
    src, dst = fcn_from(classifier, tmp_path, CLS_SIZE)
    rows = transplant(src, dst)
    forward(src)
    forward(dst)
    assert dst.blobs["fc8"].data.shape == (1, CLASSES, 1, 1)
    np.testing.assert_allclose(dst.blobs["fc8"].data[0, :, 0, 0], src.blobs["fc8"].data[0],
                               rtol=1e-4, atol=1e-6)
    status = {r.source: r.status for r in rows}
    assert status["conv1_1"] == status["conv5_3"] == COPIED
    assert status["fc6"] == status["fc7"] == status["fc8"] == COERCED
    assert len(rows) == len(src.params) and all(r.target == r.source for r in rows)
    fc6 = next(r for r in rows if r.source == "fc6")
    assert fc6.source_shapes == ((FC, WIDTHS[-1] * POOL5 ** 2), (FC,))
    assert fc6.target_shapes == ((FC, WIDTHS[-1], POOL5, POOL5), (FC,))
    printed = capsys.readouterr().out
    assert "fc6" in printed and "coerced" in printed and "16x8x2x2" in printed
    assert "13 copied, 3 coerced, 0 dropped, 0 untouched" in printed


def test_conv_head_equals_fc_head_on_every_pool5_window(classifier, tmp_path):
    src, dst = fcn_from(classifier, tmp_path, 4 * CLS_SIZE)    # pool5 8x8 -> 7x7 scores
    transplant(src, dst, verbose=False)
    forward(dst)
    pool5, scores = dst.blobs["pool5"].data[0], dst.blobs["fc8"].data[0]
    (w6, b6), (w7, b7), (w8, b8) = ([b.data for b in src.params[f]] for f in ("fc6", "fc7", "fc8"))
    relu = lambda x: np.maximum(x, 0)  # noqa: E731
    out_h, out_w = scores.shape[1:]
    assert (out_h, out_w) == (pool5.shape[1] - POOL5 + 1, pool5.shape[2] - POOL5 + 1) == (7, 7)
    for y in range(out_h):
        for x in range(out_w):
            window = pool5[:, y:y + POOL5, x:x + POOL5].ravel()
            logits = w8 @ relu(w7 @ relu(w6 @ window + b6) + b7) + b8
            np.testing.assert_allclose(scores[:, y, x], logits, rtol=1e-4, atol=1e-5)


def test_transplant_refuses_to_truncate_and_leaves_target_untouched(classifier, tmp_path):
    src, dst = fcn_from(classifier, tmp_path, CLS_SIZE, fc6_out=12)
    before = dst.params["conv1_1"][0].data.copy()
    with pytest.raises(SurgeryError, match=r"'fc6'.*\(16, 32\).*\(12, 8, 2, 2\)"):
        transplant(src, dst)
    np.testing.assert_array_equal(dst.params["conv1_1"][0].data, before)


def test_surgery_errors_are_net_io_errors_in_one_line(classifier, tmp_path):
    """Weights that do not fit a net are a NetIOError whichever package finds
    it (netio's WeightsError, surgery's transplant), still one line, exit 2."""
    src, dst = fcn_from(classifier, tmp_path, CLS_SIZE, fc6_out=12)
    with pytest.raises(NetIOError, match=r"transplant 'fc6'"):
        transplant(src, dst)
    narrow = write(tmp_path / "narrow.prototxt", vgg_net(CLS_SIZE, conv_head=True, fc6_out=12))
    out = tmp_path / "o.caffemodel"
    r = run_cli("convert", "--src-proto", classifier[0], "--src-weights", classifier[1],
                "--dst-proto", narrow, "--out", out)
    assert_refused(r, "surgery: error: transplant 'fc6'")
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_suffix_transplant_fills_only_that_stream(classifier, tmp_path, capsys):
    src = load_net(*classifier)
    dst = make_net(tmp_path, vgg_net(conv_head=True, suffix="_hha", extra_stream=True))
    plain_before = dst.params["conv1_1"][0].data.copy()
    rows = transplant(src, dst, suffix="_hha")
    assert {r.target for r in rows if r.status in (COPIED, COERCED)} == \
        {name + "_hha" for name in src.params}
    assert {r.target for r in rows if r.status == UNTOUCHED} == set(src.params)
    np.testing.assert_array_equal(dst.params["conv1_1"][0].data, plain_before)
    forward(src)
    forward(dst)
    np.testing.assert_allclose(dst.blobs["fc8_hha"].data[0, :, 0, 0], src.blobs["fc8"].data[0],
                               rtol=1e-4, atol=1e-6)
    assert "conv1_1_hha" in capsys.readouterr().out


def test_source_layers_without_target_are_dropped(classifier, tmp_path):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 16, 16]))
    n.conv1_1 = L.Convolution(n.data, num_output=WIDTHS[0], kernel_size=3, pad=1)
    n.score = L.Convolution(n.conv1_1, num_output=2, kernel_size=1)
    rows = transplant(load_net(*classifier), make_net(tmp_path, n), verbose=False)
    by_status = {s: {r.source or r.target for r in rows if r.status == s}
                 for s in (COPIED, DROPPED, UNTOUCHED)}
    assert by_status[COPIED] == {"conv1_1"}
    assert "fc8" in by_status[DROPPED] and len(by_status[DROPPED]) == 15
    assert by_status[UNTOUCHED] == {"score"}


# ------------------------------------------------------------------ bilinear

def deconv(bottom, n_out, kernel, stride, group=1, **kw):
    return L.Deconvolution(bottom, convolution_param=dict(
        num_output=n_out, kernel_size=kernel, stride=stride, group=group, bias_term=False, **kw))


def test_bilinear_closed_form_sizes_3_to_16(tmp_path):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    for k in range(3, 17):
        n[f"upscore{k}"] = deconv(n.data, 2, k, (k + 1) // 2)
    net = make_net(tmp_path, n)
    interp(net, upsampling_layers(net))
    assert np.allclose(bilinear_kernel(3), np.outer([.5, 1, .5], [.5, 1, .5]))
    assert np.allclose(bilinear_kernel(4), np.outer(*[[.25, .75, .75, .25]] * 2))
    for k in range(3, 17):
        f = (k + 1) // 2
        c = (k - 1) / 2 if k % 2 else f - 0.5
        tent = np.array([1 - abs(t - c) / f for t in range(k)])
        w = net.params[f"upscore{k}"][0].data
        np.testing.assert_allclose(w[0, 0], np.outer(tent, tent), rtol=1e-6)
        np.testing.assert_allclose(w[1, 1], np.outer(tent, tent), rtol=1e-6)
        assert not w[0, 1].any() and not w[1, 0].any()
        # each phase of the stride gathers weights summing to one
        phases = [tent[p::f].sum() for p in range(f)]
        np.testing.assert_allclose(phases, 1.0, rtol=1e-6)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [1, 2])
def test_bilinear_deconvolution_reproduces_a_ramp(tmp_path, factor, group):
    h, w, channels = 6, 7, 2
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, channels, h, w]))
    n.upscore = deconv(n.data, channels, 2 * factor, factor, group)
    ax, scale, offset = coord_map.coord_map_from_to(n.upscore, n.data)
    # output pixel y sits at input coordinate (y - (2f - 1) / 2) / f
    np.testing.assert_allclose(scale, 1 / factor)
    np.testing.assert_allclose(offset, -(2 * factor - 1) / 2 / factor)
    net = make_net(tmp_path, n)
    interp(net, upsampling_layers(net))
    slopes = np.array([[1.5, -0.5, 2.0], [-3.0, 0.25, -1.0]])   # per channel: a, b, c
    i, j = np.mgrid[:h, :w]
    net.blobs["data"].data[0] = [a * i + b * j + c for a, b, c in slopes]
    out = net.forward()["upscore"][0]
    assert out.shape == (channels, factor * (h + 1), factor * (w + 1))
    y, x = np.mgrid[:out.shape[1], :out.shape[2]]
    u, v = scale[0] * y + offset[0], scale[0] * x + offset[0]
    interior = (slice(factor, factor * h), slice(factor, factor * w))
    for ch, (a, b, c) in enumerate(slopes):
        np.testing.assert_allclose(out[ch][interior], (a * u + b * v + c)[interior],
                                   rtol=1e-5, atol=1e-5)


def test_upsampling_layers_are_the_upscore_deconvolutions(tmp_path):
    names = ["upscore", "upscore2", "upscore_pool4", "upscore8", "upscore16",
             "upscore_sem", "upscore2_geo"]
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    for name in names:
        n[name] = deconv(n.data, 2, 4, 2)
    n.deconv_other = deconv(n.data, 2, 4, 2)
    n.upscore_conv = L.Convolution(n.data, num_output=2, kernel_size=1)
    assert upsampling_layers(make_net(tmp_path, n)) == names


def test_interp_rejects_non_square_and_channel_changing_kernels(tmp_path):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    n.upscore_rect = L.Deconvolution(n.data, convolution_param=dict(
        num_output=2, kernel_h=4, kernel_w=2, stride=2, bias_term=False))
    n.upscore_mix = deconv(n.data, 3, 4, 2)
    n.upscore_sum = deconv(n.data, 1, 4, 2)
    net = make_net(tmp_path, n)
    with pytest.raises(SurgeryError, match="upscore_rect.*4x2 is not square"):
        interp(net, ["upscore_rect"])
    with pytest.raises(SurgeryError, match="upscore_mix.*2 input channels but 3 output"):
        interp(net, ["upscore_mix"])
    with pytest.raises(SurgeryError, match="upscore_sum.*2 input channels but 1 output"):
        interp(net, ["upscore_sum"])


# ------------------------------------------------------------------- expand

def score_net(tmp_path, name, classes, channels=4):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, channels, 6, 6]))
    n.score_fr = L.Convolution(n.data, num_output=classes, kernel_size=1,
                               weight_filler=dict(type="gaussian", std=1.0),
                               bias_filler=dict(type="constant", value=0.5))
    return make_net(tmp_path, n, name)


def test_expand_score_keeps_old_classes_and_new_init(tmp_path):
    old, new = score_net(tmp_path, "old", 3), score_net(tmp_path, "new", 5)
    randomize(old)
    fresh = [b.data.copy() for b in new.params["score_fr"]]
    expand_score(old, new, "score_fr")
    for o, n_, f in zip(old.params["score_fr"], new.params["score_fr"], fresh):
        np.testing.assert_array_equal(n_.data[:3], o.data)
        np.testing.assert_array_equal(n_.data[3:], f[3:])
    forward(old)
    new.blobs["data"].data[...] = old.blobs["data"].data
    np.testing.assert_allclose(new.forward()["score_fr"][:, :3], old.blobs["score_fr"].data,
                               rtol=1e-6)
    with pytest.raises(SurgeryError, match="new layer has 3 outputs, fewer than the old 5"):
        expand_score(new, old, "score_fr")


def test_color_depth_first_layer_from_color_filters(tmp_path):
    def first(channels, name):
        n = caffe.NetSpec()
        n.data = L.Input(shape=dict(dim=[1, channels, 8, 8]))
        n[name] = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1)
        return make_net(tmp_path, n, name)
    src, dst = first(3, "conv1_1"), first(4, "conv1_1_bgrd")
    randomize(src)
    init_color_depth(src, dst)
    w_src, w_dst = src.params["conv1_1"][0].data, dst.params["conv1_1_bgrd"][0].data
    np.testing.assert_array_equal(w_dst[:, :3], w_src)
    np.testing.assert_allclose(w_dst[:, 3], (w_src[:, 0] + w_src[:, 1] + w_src[:, 2]) / 3,
                               rtol=1e-6)
    np.testing.assert_array_equal(dst.params["conv1_1_bgrd"][1].data, src.params["conv1_1"][1].data)
    forward(src)
    dst.blobs["data"].data[0, :3] = src.blobs["data"].data[0]
    dst.blobs["data"].data[0, 3] = 0                     # no depth: the color net's response
    np.testing.assert_allclose(dst.forward()["conv1_1_bgrd"], src.blobs["conv1_1"].data,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(SurgeryError, match="3-channel source"):
        init_color_depth(dst, src, "conv1_1_bgrd", "conv1_1")


# ---------------------------------------------------------------------- io

def test_bad_caffemodels_raise_naming_the_file(classifier, tmp_path):
    proto, weights = classifier
    data = open(weights, "rb").read()
    cases = {"missing.caffemodel": None, "truncated.caffemodel": data[:len(data) // 2 + 7],
             "corrupt.caffemodel": os.urandom(4096), "empty.caffemodel": b""}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(NetIOError, match=str(path)):
            load_net(proto, str(path))
    assert read_weights(weights).layer   # the intact file parses


def write_v1_caffemodel(weights, path):
    """The same parameters in the V1 format of VGG16's published file: `layers`
    with enum types and 4-d num/channels/height/width blobs."""
    v1_types = {"Convolution": caffe_pb2.V1LayerParameter.CONVOLUTION,
                "InnerProduct": caffe_pb2.V1LayerParameter.INNER_PRODUCT}
    legacy = caffe_pb2.NetParameter(name="legacy")
    for layer in read_weights(weights).layer:
        if not layer.blobs:
            continue
        v1 = legacy.layers.add(name=layer.name, type=v1_types[layer.type])
        for blob in layer.blobs:
            dims = (1,) * (4 - len(blob.shape.dim)) + tuple(blob.shape.dim)
            v1.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3],
                         data=blob.data)
    path.write_bytes(legacy.SerializeToString())
    return path


def test_legacy_v1_caffemodel_loads_like_vgg16s(classifier, tmp_path):
    """VGG16's published file uses V1 `layers` and 4-d num/channels/height/width blobs."""
    proto, weights = classifier
    path = write_v1_caffemodel(weights, tmp_path / "legacy.caffemodel")
    net, ref = load_net(proto, str(path)), load_net(proto, weights)
    for name in ref.params:
        for a, b in zip(net.params[name], ref.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    fcn = write(tmp_path / "fcn.prototxt", vgg_net(conv_head=True))
    with pytest.raises(NetIOError, match=r"'fc6' blob 0 has shape \(1, 1, 16, 32\)"):
        load_net(fcn, str(path))


def test_weights_file_transplants_a_v1_classifier_into_an_fcn(classifier, tmp_path):
    """The solver's path (no source prototxt): a V1 caffemodel such as VGG16's
    published one, read by Caffemodel, convolutionises fc6/fc7/fc8 exactly."""
    proto, weights = classifier
    path = write_v1_caffemodel(weights, tmp_path / "legacy.caffemodel")
    ref = load_net(proto, weights)
    fcn = load_net(write(tmp_path / "fcn.prototxt", vgg_net(conv_head=True)))
    rows = transplant(Caffemodel(str(path)), fcn, verbose=False)
    assert {r.target: r.status for r in rows if r.target in ("fc6", "fc7", "conv1_1")} == \
        {"fc6": "coerced", "fc7": "coerced", "conv1_1": "copied"}
    for name in ref.params:
        for a, b in zip(fcn.params[name], ref.params[name]):
            np.testing.assert_array_equal(a.data.ravel(), b.data.ravel())


def test_weights_that_do_not_fit_raise_instead_of_aborting(classifier, tmp_path):
    proto = write(tmp_path / "fcn.prototxt", vgg_net(conv_head=True, fc6_out=12))
    expected = r"layer 'fc6' blob 0 has shape \(16, 32\).*\(12, 8, 2, 2\)"
    with pytest.raises(NetIOError, match=expected):
        load_net(proto, classifier[1])


def test_missing_or_broken_prototxt_raises(classifier, tmp_path):
    with pytest.raises(NetIOError, match="prototxt not found: .*nope.prototxt"):
        load_net(str(tmp_path / "nope.prototxt"), classifier[1])
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: 'x' type: \n")
    with pytest.raises(NetIOError, match="cannot parse prototxt .*bad.prototxt"):
        load_net(str(bad))
    dangling = tmp_path / "dangling.prototxt"
    dangling.write_text('layer { name: "c" type: "Convolution" bottom: "nothing" top: "c" '
                        'convolution_param { num_output: 1 kernel_size: 1 } }')
    with pytest.raises(NetIOError, match="'c' reads \\['nothing'\\]"):
        load_net(str(dangling))


def python_data_net():
    """A training net whose data comes from a Python layer (module never imported)."""
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module="layers.no_such_module", layer="SegDataLayer",
                               param_str="{'split': 'train'}", ntop=2)
    n.conv1_1 = L.Convolution(n.data, num_output=WIDTHS[0], kernel_size=3, pad=1)
    n.upscore = deconv(n.conv1_1, WIDTHS[0], 4, 2)
    n.score = L.Crop(n.upscore, n.data, crop_param=dict(axis=2, offset=1))
    n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(ignore_label=255))
    return n


def test_python_data_layers_become_inputs():
    param = python_data_net().to_proto()
    out = replace_data_layers(param, shapes={"label": (1, 1, 40, 40)}, size=40)
    assert param.layer[0].type == "Python"                  # the original is not modified
    first = out.layer[0]
    assert (first.name, first.type, list(first.top)) == (param.layer[0].name, "Input",
                                                         ["data", "label"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 40, 40], [1, 1, 40, 40]]
    assert not first.HasField("python_param")
    assert [layer.name for layer in out.layer[1:]] == [layer.name for layer in param.layer[1:]]
    net = net_from_param(out, caffe.TRAIN)
    assert net.blobs["data"].data.shape == (1, 3, 40, 40)
    assert net.blobs["score"].data.shape == (1, WIDTHS[0], 40, 40)


def test_load_for_surgery_builds_without_the_dataset(tmp_path):
    net = load_for_surgery(write(tmp_path / "train.prototxt", python_data_net()))
    assert net.blobs["data"].data.shape == (1, 3, 64, 64)
    assert net.blobs["label"].data.shape == (1, 1, 64, 64)


def test_save_weights_is_atomic(classifier, tmp_path):
    net = load_net(*classifier)
    out = tmp_path / "w" / "out.caffemodel"
    save_weights(net, str(out))
    assert read_weights(str(out)).layer and os.listdir(out.parent) == ["out.caffemodel"]

    class Failing:
        params, layers = {}, []             # what the free-space estimate reads

        def save(self, path):
            open(path, "wb").write(b"partial")
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        save_weights(Failing(), str(out))
    assert os.listdir(out.parent) == ["out.caffemodel"] and read_weights(str(out)).layer


# --------------------------------------------------------------------- CLI

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", "surgery", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def fcn32_spec():
    """A tiny FCN-32s training net on a Python data layer."""
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module="layers.no_such_module", layer="SegDataLayer", ntop=2)
    top = vgg_trunk(n, n.data)
    n.fc6 = L.Convolution(top, num_output=FC, kernel_size=POOL5)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.fc7 = L.Convolution(n.fc6, num_output=FC, kernel_size=1)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.score_fr = L.Convolution(n.fc7, num_output=3, kernel_size=1)
    n.upscore = deconv(n.score_fr, 3, 64, 32)
    n.score = L.Crop(n.upscore, n.data, crop_param=dict(axis=2, offset=0))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n


def test_cli_convert_end_to_end(classifier, tmp_path):
    dst_proto = write(tmp_path / "train.prototxt", fcn32_spec())
    out = tmp_path / "fcn32s-init.caffemodel"
    r = run_cli("convert", "--src-proto", classifier[0], "--src-weights", classifier[1],
                "--dst-proto", dst_proto, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "fc6" in r.stdout and "coerced" in r.stdout and "dropped" in r.stdout
    assert "bilinear: upscore" in r.stdout and str(out) in r.stdout
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]

    src = load_net(*classifier)
    dst = load_for_surgery(dst_proto)
    before = dst.params["score_fr"][0].data.copy()
    dst.copy_from(str(out))
    np.testing.assert_array_equal(dst.params["conv3_2"][0].data, src.params["conv3_2"][0].data)
    np.testing.assert_array_equal(dst.params["fc6"][0].data.reshape(FC, -1),
                                  src.params["fc6"][0].data)
    np.testing.assert_array_equal(dst.params["score_fr"][0].data, before)   # zero-filled
    up = dst.params["upscore"][0].data
    np.testing.assert_allclose(up[2, 2], bilinear_kernel(64), rtol=1e-6)
    assert not up[0, 1].any()


def test_cli_reports_bad_input_without_traceback(classifier, tmp_path):
    missing = tmp_path / "VGG16.caffemodel"
    r = run_cli("convert", "--src-proto", classifier[0], "--src-weights", missing,
                "--dst-proto", classifier[0], "--out", tmp_path / "o.caffemodel")
    assert r.returncode == 2
    assert f"caffemodel not found: {missing}" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.caffemodel").exists()


def assert_refused(r, *fragments):
    """Exit 2, one message line of ours, no traceback, no Caffe CHECK."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Check failed" not in r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr


def test_cli_refuses_bad_input_sizes_shapes_and_layer_settings(classifier, tmp_path):
    dst_proto = write(tmp_path / "train.prototxt", fcn32_spec())
    out = tmp_path / "o.caffemodel"
    base = ("convert", "--src-proto", classifier[0], "--src-weights", classifier[1],
            "--dst-proto", dst_proto, "--out", out)
    for size in ("0", "-5"):
        assert_refused(run_cli(*base, "--input-size", size), f"--input-size must be at least 1, got {size}")
    for shape, fragment in (("data=1x3x0x64", "4 positive dimensions"),
                            ("data=1x3x64", "4 positive dimensions"),
                            ("label=1x3x64x64", "label top has 1 channel"),
                            ("label=1x1x32x64", "must share N, H and W"),
                            ("lable=1x1x64x64", "no data layer of the net produces; data tops: data, label"),
                            ("data=abc", "expected TOP=NxCxHxW")):
        assert_refused(run_cli(*base, "--input-shape", shape), fragment)
    zero = tmp_path / "zero.prototxt"
    zero.write_text(Path(dst_proto).read_text().replace("num_output: 3", "num_output: 0", 1))
    assert "num_output: 0" in zero.read_text()
    assert_refused(run_cli(*base[:5], "--dst-proto", zero, "--out", out),
                   f"{zero}: layer 'score_fr' (Convolution): num_output must be at least 1, got 0")
    assert not out.exists()


def test_cli_refuses_to_overwrite_an_input(classifier, tmp_path):
    src_proto = tmp_path / "src.prototxt"
    src_weights = tmp_path / "src.caffemodel"
    src_proto.write_text(Path(classifier[0]).read_text())
    src_weights.write_bytes(Path(classifier[1]).read_bytes())
    dst_proto = Path(write(tmp_path / "train.prototxt", fcn32_spec()))
    before = {p: p.read_bytes() for p in (src_proto, src_weights, dst_proto)}
    for flag, path in (("--src-weights", src_weights), ("--dst-proto", dst_proto),
                       ("--src-proto", src_proto)):
        out = tmp_path / ".." / tmp_path.name / path.name          # the same file, spelt differently
        r = run_cli("convert", "--src-proto", src_proto, "--src-weights", src_weights,
                    "--dst-proto", dst_proto, "--out", out)
        assert_refused(r, f"is the {flag} input", "refusing to overwrite it")
    assert {p: p.read_bytes() for p in before} == before


def test_cli_detects_a_caffemodel_cut_between_layers(classifier, tmp_path):
    """A file cut exactly after fc6 still parses; fc7/fc8 must not become zeros silently."""
    data = Path(classifier[1]).read_bytes()
    param = read_weights(classifier[1])
    kept = caffe_pb2.NetParameter()
    kept.CopyFrom(param)
    del kept.layer[[layer.name for layer in param.layer].index("fc7"):]
    prefix = kept.SerializeToString()
    assert data.startswith(prefix) and len(prefix) < len(data)     # a byte-exact cut
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(prefix)
    out = tmp_path / "o.caffemodel"
    r = run_cli("convert", "--src-proto", classifier[0], "--src-weights", cut,
                "--dst-proto", write(tmp_path / "train.prototxt", fcn32_spec()), "--out", out)
    assert_refused(r, f"caffemodel {cut} has no parameters for layer(s) fc7, fc8", "truncated")
    assert not out.exists()


def test_cli_suffix_matching_nothing_is_an_error(classifier, tmp_path):
    dst_proto = write(tmp_path / "train.prototxt", vgg_net(conv_head=True, suffix="_hha"))
    out = tmp_path / "o.caffemodel"
    args = ("convert", "--src-proto", classifier[0], "--src-weights", classifier[1],
            "--dst-proto", dst_proto, "--out", out)
    r = run_cli(*args, "--suffix", "_hah")
    assert_refused(r, "--suffix '_hah': no layer <name>_hah", "nothing was transplanted")
    assert not out.exists()
    r = run_cli(*args, "--suffix", "_hha")
    assert r.returncode == 0, r.stderr
    assert out.exists()


# ---------------------------------------------------------------- download

def test_published_checksums():
    assert IMAGENET_WEIGHTS["alexnet"].sha1 == "9116a64c0fbe4459d18f4bb6b56d647b63920377"
    assert IMAGENET_WEIGHTS["vgg16"].url.endswith("/VGG_ILSVRC_16_layers.caffemodel")


def test_fetch_file_url_verifies_checksum(classifier, tmp_path, capsys):
    payload = open(classifier[1], "rb").read()
    src = tmp_path / "remote.caffemodel"
    src.write_bytes(payload)
    url = src.as_uri()
    dest = tmp_path / "weights" / "model.caffemodel"
    with pytest.raises(SurgeryError, match="does not match the published"):
        fetch(url, str(dest), sha1="0" * 40)
    assert not dest.parent.exists() or os.listdir(dest.parent) == []
    sha1 = hashlib.sha1(payload).hexdigest()
    assert fetch(url, str(dest), sha1=sha1) == str(dest)
    assert dest.read_bytes() == payload and os.listdir(dest.parent) == ["model.caffemodel"]
    err = capsys.readouterr().err
    assert "model.caffemodel: " in err and "MB (100%)" in err
    fetch(url, str(dest), sha1=sha1)                   # present: kept, not fetched again
    assert "already present and verified" in capsys.readouterr().err


def test_fetch_without_checksum_requires_a_caffemodel(classifier, tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(NetIOError, match="truncated or corrupt|no learned"):
        fetch(junk.as_uri(), str(tmp_path / "out" / "x.caffemodel"))
    assert os.listdir(tmp_path / "out") == []
    dest = fetch(Path(classifier[1]).as_uri(), str(tmp_path / "out" / "x.caffemodel"))
    assert read_weights(dest).layer
    assert "no published checksum" in capsys.readouterr().err


def test_fetch_over_http_on_localhost(classifier, tmp_path):
    payload = open(classifier[1], "rb").read()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/bvlc_alexnet.caffemodel"
        dest = fetch(url, str(tmp_path / "a.caffemodel"), hashlib.sha1(payload).hexdigest())
        assert open(dest, "rb").read() == payload
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_offline_says_so(tmp_path):
    with socket.socket() as s:              # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "vgg.caffemodel"
    expected = f"cannot download .*:{port}.*Offline\\?.*{re.escape(str(dest))}"
    with pytest.raises(SurgeryError, match=expected):
        fetch(f"http://127.0.0.1:{port}/vgg.caffemodel", str(dest), timeout=5)
    assert os.listdir(tmp_path) == []


def test_recipe_initialises_color_depth_first_conv(tmp_path):
    """nyud-fcn32s-color-d from a VGG16-named classifier: conv1_1_bgrd gets the
    color filters plus their mean for depth; upsampling becomes bilinear."""
    from net_specs import build, classifier
    from surgery.recipe import initialise
    cls_path, fcn_path = tmp_path / "cls.prototxt", tmp_path / "fcn.prototxt"
    cls_path.write_text(str(classifier("vgg16-ilsvrc", width=1 / 16, batch=1)))
    fcn_path.write_text(str(build("nyud-fcn32s-color-d", "deploy", width=1 / 16, size=(64, 64))))
    src = caffe.Net(str(cls_path), caffe.TEST)
    rng = np.random.RandomState(0)
    for blobs in src.params.values():
        for b in blobs:
            b.data[...] = rng.randn(*b.data.shape)
    weights = str(tmp_path / "cls.caffemodel")
    src.save(weights)
    dst = caffe.Net(str(fcn_path), caffe.TEST)
    initialise(Caffemodel(weights), dst, verbose=False)
    w_src, w_dst = src.params["conv1_1"][0].data, dst.params["conv1_1_bgrd"][0].data
    assert np.array_equal(w_dst[:, :3], w_src)
    assert np.allclose(w_dst[:, 3], w_src.mean(axis=1))
    assert np.array_equal(dst.params["conv1_1_bgrd"][1].data, src.params["conv1_1"][1].data)
    assert np.allclose(dst.params["fc6"][0].data.ravel(), src.params["fc6"][0].data.ravel())
    assert dst.params["upscore"][0].data[0, 0].max() > 0


def test_read_weights_names_a_solverstate_or_prototxt_for_what_it_is(classifier, tmp_path):
    state = caffe_pb2.SolverState()
    state.iter, state.learned_net = 400, "runs/x/train_iter_400.caffemodel"
    for name in ("train_iter_400.solverstate", "renamed.caffemodel"):
        path = tmp_path / name
        path.write_bytes(state.SerializeToString())
        with pytest.raises(NetIOError, match="is a solver state .iteration 400; --resume takes "
                                               "it. whose weights are in runs/x/train_iter_400"):
            read_weights(str(path))
    with pytest.raises(NetIOError, match=r"vgg_deploy.prototxt is a prototxt \(text\), not a "
                                           "caffemodel"):
        read_weights(classifier[0])
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "train.prototxt"\nbase_lr: 1e-10\n')
    with pytest.raises(NetIOError, match="is a solver prototxt"):
        read_weights(str(solver))
    assert read_weights(classifier[1]).layer            # a real caffemodel still reads
