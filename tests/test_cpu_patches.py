"""Our Caffe CPU patches (docker/patches/0007+) compute what unpatched Caffe does.

Every FCN family runs one training step (forward to SoftmaxWithLoss, backward
with every gradient, dropout on) in this process on the unpatched CPU code
path (CAFFE_CPU_REFERENCE=1: a col_buffer_ per layer, whole-image im2col,
serial loops) and on the patched one (the shared workspace in chunks of output
rows, OpenMP loops); outputs, every blob's gradient and every parameter
gradient must agree to 1e-5 of their scale. With the default workspace cap
these narrow nets' convolutions fit one chunk and the whole step is compared.
With a tiny cap every convolution runs in many small chunks, whose GEMMs
OpenBLAS sums in another order (its small-matrix kernels): the forward then
differs at the level of float rounding, which is enough to move a max-pooling
argmax between two near-equal inputs and send that pixel's gradient to its
neighbour, as any change of summation order would. So there the forward
outputs are compared, and the backward is compared on the same forward
(the switch is read at every call). A child process shows that the shared
workspace lowers peak memory.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe
from bench import common
from net_specs import build
from net_specs.models import get_model

REL_TOL = 1e-5
SIZE = (67, 83)          # not multiples of 32: odd crops, ceil-rounded pooling
WIDTH = 1 / 16           # narrow trunks (VGG16's 64 channels -> 4)
FAMILIES = ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet",
            "voc-fcn-googlenet", "nyud-fcn32s-color-hha", "siftflow-fcn8s"]
TINY_CAP_MB = "0.02"     # 20 KiB: every non-1x1 convolution runs in several chunks


def training_proto(model, size=SIZE, width=WIDTH):
    """The deploy net plus a label Input and training's loss for every head."""
    proto = build(model, "deploy", size=size, width=width)
    for head in get_model(model).get_dataset().heads:
        label = proto.layer.add(name=head.label, type="Input", top=[head.label])
        label.input_param.shape.add(dim=[1, 1, size[0], size[1]])
        loss = proto.layer.add(name="loss" + head.suffix, type="SoftmaxWithLoss",
                               bottom=["score" + head.suffix, head.label],
                               top=["loss" + head.suffix])
        loss.loss_param.ignore_label = 255
        loss.loss_param.normalize = False
    return proto


def seeded_net(model, tmp_path):
    path = tmp_path / f"{model}.prototxt"
    path.write_text(str(training_proto(model)))
    net = caffe.Net(str(path), caffe.TRAIN)          # TRAIN: dropout draws masks
    common.fill_random(net, seed=5)
    rng = np.random.RandomState(6)
    heads = {h.label: h for h in get_model(model).get_dataset().heads}
    for name in net.inputs:
        data = net.blobs[name].data
        if name in heads:
            labels = rng.randint(0, heads[name].n_classes, data.shape)
            labels[rng.rand(*data.shape) < 0.1] = 255        # some ignored pixels
            data[...] = labels
        else:
            data[...] = rng.uniform(-100, 100, data.shape)
    return net


def training_step(net, monkeypatch, forward_reference, backward_reference):
    """Every output, blob gradient and parameter gradient of one step, its
    forward and its backward each on the unpatched path or not."""
    for params in net.params.values():
        for p in params:
            p.diff[...] = 0
    caffe.set_random_seed(11)                            # the same dropout masks
    monkeypatch.setenv("CAFFE_CPU_REFERENCE", "1" if forward_reference else "0")
    net.forward()
    monkeypatch.setenv("CAFFE_CPU_REFERENCE", "1" if backward_reference else "0")
    net.backward()
    out = {f"{name}": blob.data.copy() for name, blob in net.blobs.items()}
    out.update({f"{name} diff": blob.diff.copy() for name, blob in net.blobs.items()
                if name not in net.inputs})
    out.update({f"{name}[{i}] diff": p.diff.copy()
                for name, params in net.params.items() for i, p in enumerate(params)})
    return out


def worst_difference(reference, patched):
    """(max |patched - reference| / scale, name) over all arrays; scale =
    max |reference| of that array (1 where it is all zero)."""
    worst = (0.0, "")
    for name, ref in reference.items():
        scale = float(np.abs(ref).max()) or 1.0
        worst = max(worst, (float(np.abs(patched[name] - ref).max()) / scale, name))
    return worst


def assert_close(reference, patched, what, names=None):
    names = [k for k in reference if names is None or names(k)]
    diff, name = worst_difference({k: reference[k] for k in names}, patched)
    assert diff <= REL_TOL, f"{what}: {name} differs by {diff:.2e} of its scale"


@pytest.mark.parametrize("model", FAMILIES)
def test_patched_cpu_paths_match_unpatched(model, tmp_path, monkeypatch):
    net = seeded_net(model, tmp_path)
    monkeypatch.delenv("CAFFE_CONV_WORKSPACE_MB", raising=False)
    reference = training_step(net, monkeypatch, True, True)
    assert any(k.endswith("diff") and "conv1" in k and np.abs(v).max() > 0
               for k, v in reference.items()), "no gradient reached the first convolution"
    assert all(np.isfinite(v).all() for v in reference.values())
    patched = training_step(net, monkeypatch, False, False)
    assert patched.keys() == reference.keys()
    assert_close(reference, patched, f"{model}, default workspace")

    monkeypatch.setenv("CAFFE_CONV_WORKSPACE_MB", TINY_CAP_MB)
    chunked = training_step(net, monkeypatch, False, False)
    assert_close(reference, chunked, f"{model}, tiny workspace, forward",
                 names=lambda k: not k.endswith("diff"))
    chunked_backward = training_step(net, monkeypatch, True, False)
    assert_close(reference, chunked_backward, f"{model}, tiny workspace, backward")


def test_reference_switch_is_read_at_every_call(tmp_path, monkeypatch):
    """The unpatched path repeats itself bit for bit; the chunked path's small
    GEMMs round differently: if the tiny cap changed nothing, it did not run."""
    net = seeded_net("voc-fcn8s", tmp_path)
    reference = training_step(net, monkeypatch, True, True)
    again = training_step(net, monkeypatch, True, True)
    assert all(np.array_equal(reference[k], again[k]) for k in reference)
    monkeypatch.setenv("CAFFE_CONV_WORKSPACE_MB", TINY_CAP_MB)
    chunked = training_step(net, monkeypatch, False, False)
    assert not np.array_equal(reference["score"], chunked["score"])


CHILD = """
import json, os, sys
os.environ.setdefault("GLOG_minloglevel", "2")
sys.path.insert(0, {root!r})
import caffe
from bench import common
from common.report import peak_rss_mb
net = common.load_net(common.deploy_proto("voc-fcn8s", (200, 200)))
common.fill_inputs(net)
net.forward()
print(json.dumps(peak_rss_mb()))
"""


def child_peak_mb(reference):
    env = dict(os.environ, CAFFE_CPU_REFERENCE="1" if reference else "0")
    env.pop("CAFFE_CONV_WORKSPACE_MB", None)
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=common.ROOT)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_shared_workspace_lowers_peak_memory():
    """Full-width FCN-8s forward at 200x200 (pad 100: conv1_2 works on
    398x398): the per-layer im2col buffers sum to ~1 GB (conv1_2's alone is
    576 x 396^2 floats, 361 MB); the shared, capped workspace is 64 MB
    (measured: 1823 MB unpatched, 870 MB patched)."""
    reference, patched = child_peak_mb(True), child_peak_mb(False)
    assert reference - patched > 500, (reference, patched)


def test_layer_profile_times_every_layer():
    """bench.layer_profile's figures cover the whole net, one row per layer."""
    from bench import layer_profile
    r = layer_profile.measure("voc-fcn-alexnet", "96x96", runs=1)
    net = common.load_net(common.deploy_proto("voc-fcn-alexnet", (96, 96)))
    assert [l["name"] for l in r["layers"]] == list(net._layer_names)
    assert all(l["ms"] >= 0 for l in r["layers"])
    assert r["total_ms"] == pytest.approx(sum(l["ms"] for l in r["layers"]))
    by_type = {g["type"]: g for g in layer_profile.by_type(r)}
    assert by_type["Convolution"]["gflops"] > 0 and by_type["ReLU"]["gflops"] is None
    assert sum(g["share"] for g in by_type.values()) == pytest.approx(1.0)


def test_before_after_rejects_a_directory_without_caffe(tmp_path):
    from bench import before_after
    with pytest.raises(SystemExit, match="no caffe/__init__.py"):
        before_after.before_env(str(tmp_path))
    assert before_after.before_env("reference") == {"CAFFE_CPU_REFERENCE": "1"}


VARIANTS = """
force_backward: true
input: "data" input_shape { dim: 2 dim: 4 dim: 23 dim: 19 }
layer { name: "pad" type: "Convolution" bottom: "data" top: "pad"
        convolution_param { num_output: 6 kernel_size: 3 pad: 5 } }
layer { name: "grouped_dilated" type: "Convolution" bottom: "pad" top: "grouped_dilated"
        convolution_param { num_output: 8 kernel_size: 3 stride: 2 group: 2 pad: 1 dilation: 2 } }
layer { name: "one_by_one" type: "Convolution" bottom: "grouped_dilated" top: "one_by_one"
        convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "rectangular" type: "Convolution" bottom: "one_by_one" top: "rectangular"
        convolution_param { num_output: 5 kernel_h: 2 kernel_w: 5 stride_h: 3 stride_w: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "rectangular" top: "up"
        convolution_param { num_output: 4 kernel_size: 4 stride: 2 } }
layer { name: "up_grouped" type: "Deconvolution" bottom: "up" top: "up_grouped"
        convolution_param { num_output: 4 kernel_size: 3 stride: 3 group: 2 pad: 1 } }
"""


def test_convolution_variants_match_unpatched(tmp_path, monkeypatch):
    """Groups, dilation, rectangular kernels and strides, 1x1, batch 2, and
    deconvolutions whose weights learn (their backward reuses the im2col of
    the weight gradient when it fits one chunk), with all gradients."""
    path = tmp_path / "variants.prototxt"
    path.write_text(VARIANTS)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.RandomState(0)
    for params in net.params.values():
        for p in params:
            p.data[...] = rng.randn(*p.data.shape)
    net.blobs["data"].data[...] = rng.randn(*net.blobs["data"].data.shape)
    top_diff = rng.randn(*net.blobs["up_grouped"].data.shape)

    def step(forward_reference, backward_reference):
        for params in net.params.values():
            for p in params:
                p.diff[...] = 0
        monkeypatch.setenv("CAFFE_CPU_REFERENCE", "1" if forward_reference else "0")
        net.forward()
        net.blobs["up_grouped"].diff[...] = top_diff
        monkeypatch.setenv("CAFFE_CPU_REFERENCE", "1" if backward_reference else "0")
        net._backward(len(net.layers) - 1, 0)
        out = {name: blob.data.copy() for name, blob in net.blobs.items()}
        out.update({f"{name} diff": blob.diff.copy() for name, blob in net.blobs.items()})
        out.update({f"{name}[{i}] diff": p.diff.copy()
                    for name, params in net.params.items() for i, p in enumerate(params)})
        return out

    monkeypatch.delenv("CAFFE_CONV_WORKSPACE_MB", raising=False)
    reference = step(True, True)
    assert np.abs(reference["data diff"]).max() > 0 and np.abs(reference["up[0] diff"]).max() > 0
    patched = step(False, False)
    assert all(np.array_equal(reference[k], patched[k]) for k in reference), \
        "one chunk per convolution must make the unpatched BLAS calls"
    monkeypatch.setenv("CAFFE_CONV_WORKSPACE_MB", TINY_CAP_MB)
    assert_close(reference, step(False, False), "tiny workspace")
