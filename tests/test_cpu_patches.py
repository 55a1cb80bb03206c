"""Our Caffe CPU patches (docker/patches/0007+) compute what unpatched Caffe does.

Three CPU paths, chosen per call by CAFFE_CPU_REFERENCE / CAFFE_CPU_CONV:
the unpatched BVLC code ("reference"), im2col + GEMM with the shared
workspace and OpenMP loops (0007-0009, "im2col") and oneDNN's convolutions
(0013, "onednn", the default). The im2col path is described below; oneDNN's
is compared with both (test_onednn_matches_unpatched_and_im2col), and its
weight cache must see every write (test_onednn_reorders_weights_once...).

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
import re
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


def seeded_net(model, tmp_path, proto_path=None):
    path = proto_path or tmp_path / f"{model}.prototxt"
    if proto_path is None:
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


def use_path(monkeypatch, path):
    """Selects a CPU code path for the next calls (both switches are read at
    every call): "reference" (unpatched BVLC), "im2col" (0007-0009) or
    "onednn" (0013)."""
    assert path in ("reference", "im2col", "onednn"), path
    monkeypatch.setenv("CAFFE_CPU_REFERENCE", "1" if path == "reference" else "0")
    monkeypatch.setenv("CAFFE_CPU_CONV", "onednn" if path == "onednn" else "im2col")


def training_step(net, monkeypatch, forward_path, backward_path):
    """Every output, blob gradient and parameter gradient of one step, its
    forward and its backward each on the given path (use_path)."""
    for params in net.params.values():
        for p in params:
            p.diff[...] = 0
    caffe.set_random_seed(11)                            # the same dropout masks
    use_path(monkeypatch, forward_path)
    net.forward()
    use_path(monkeypatch, backward_path)
    net.backward()
    out = {f"{name}": blob.data.copy() for name, blob in net.blobs.items()}
    out.update({f"{name} diff": blob.diff.copy() for name, blob in net.blobs.items()
                if name not in net.inputs})
    out.update({f"{name}[{i}] diff": p.diff.copy()
                for name, params in net.params.items() for i, p in enumerate(params)})
    return out


def array_scale(reference, name):
    """max |reference[name]| (1 where it is all zero); for a bias gradient
    ("L[1] diff" of a layer L whose top blob L has a 4-D gradient), at least
    the largest sum of |top gradient| over a channel's pixels: the bias
    gradient is that sum, and its float rounding error scales with the sum
    of the magnitudes it adds, not with the result (they cancel: in the
    narrow NYUDv2 net conv1_2hha's bias gradient is 1/850 of that sum)."""
    scale = float(np.abs(reference[name]).max())
    top = reference.get(name[:-len("[1] diff")] + " diff") if name.endswith("[1] diff") else None
    if top is not None and top.ndim == 4:
        scale = max(scale, float(np.abs(top).sum(axis=(0, 2, 3)).max()))
    return scale or 1.0


def worst_difference(reference, patched):
    """(max |patched - reference| / scale, name) over all arrays (array_scale)."""
    worst = (0.0, "")
    for name, ref in reference.items():
        worst = max(worst, (float(np.abs(patched[name] - ref).max()) / array_scale(reference, name),
                            name))
    return worst


def assert_close(reference, patched, what, names=None):
    names = [k for k in reference if names is None or names(k)]
    diff, name = worst_difference({k: reference[k] for k in names}, patched)
    assert diff <= REL_TOL, f"{what}: {name} differs by {diff:.2e} of its scale"


@pytest.mark.parametrize("model", FAMILIES)
def test_patched_cpu_paths_match_unpatched(model, tmp_path, monkeypatch):
    net = seeded_net(model, tmp_path)
    monkeypatch.delenv("CAFFE_CONV_WORKSPACE_MB", raising=False)
    reference = training_step(net, monkeypatch, "reference", "reference")
    assert any(k.endswith("diff") and "conv1" in k and np.abs(v).max() > 0
               for k, v in reference.items()), "no gradient reached the first convolution"
    assert all(np.isfinite(v).all() for v in reference.values())
    patched = training_step(net, monkeypatch, "im2col", "im2col")
    assert patched.keys() == reference.keys()
    assert_close(reference, patched, f"{model}, default workspace")

    monkeypatch.setenv("CAFFE_CONV_WORKSPACE_MB", TINY_CAP_MB)
    chunked = training_step(net, monkeypatch, "im2col", "im2col")
    assert_close(reference, chunked, f"{model}, tiny workspace, forward",
                 names=lambda k: not k.endswith("diff"))
    chunked_backward = training_step(net, monkeypatch, "reference", "im2col")
    assert_close(reference, chunked_backward, f"{model}, tiny workspace, backward")


def is_forward(name):
    return not name.endswith("diff")


@pytest.mark.parametrize("size", [SIZE, (64, 96)], ids=["67x83", "64x96"])
@pytest.mark.parametrize("model", FAMILIES)
def test_onednn_matches_unpatched_and_im2col(model, size, tmp_path, monkeypatch):
    """oneDNN's convolutions sum in their own order, so, as with the tiny
    workspace above, the forward is compared on its own and the backward on
    the reference forward: every output, blob gradient and parameter
    gradient within 1e-5 of its scale of the unpatched path and of im2col."""
    path = tmp_path / f"{model}.prototxt"
    path.write_text(str(training_proto(model, size=size)))
    net = seeded_net(model, tmp_path, proto_path=path)
    monkeypatch.delenv("CAFFE_CONV_WORKSPACE_MB", raising=False)
    reference = training_step(net, monkeypatch, "reference", "reference")
    im2col = training_step(net, monkeypatch, "reference", "im2col")
    im2col_forward = training_step(net, monkeypatch, "im2col", "im2col")
    onednn_forward = training_step(net, monkeypatch, "onednn", "onednn")
    assert any(not np.array_equal(onednn_forward[k], im2col_forward[k]) for k in reference), \
        "CAFFE_CPU_CONV=onednn computed exactly what im2col does: did oneDNN run?"
    assert_close(reference, onednn_forward, f"{model} {size}, oneDNN forward", names=is_forward)
    assert_close(im2col_forward, onednn_forward, f"{model} {size}, oneDNN vs im2col forward",
                 names=is_forward)
    onednn = training_step(net, monkeypatch, "reference", "onednn")
    assert_close(reference, onednn, f"{model} {size}, oneDNN backward")
    assert_close(im2col, onednn, f"{model} {size}, oneDNN vs im2col backward")


def test_reference_switch_is_read_at_every_call(tmp_path, monkeypatch):
    """The unpatched path repeats itself bit for bit; the chunked path's small
    GEMMs round differently: if the tiny cap changed nothing, it did not run."""
    net = seeded_net("voc-fcn8s", tmp_path)
    reference = training_step(net, monkeypatch, "reference", "reference")
    again = training_step(net, monkeypatch, "reference", "reference")
    assert all(np.array_equal(reference[k], again[k]) for k in reference)
    monkeypatch.setenv("CAFFE_CONV_WORKSPACE_MB", TINY_CAP_MB)
    chunked = training_step(net, monkeypatch, "im2col", "im2col")
    assert not np.array_equal(reference["score"], chunked["score"])
    monkeypatch.delenv("CAFFE_CONV_WORKSPACE_MB")
    im2col = training_step(net, monkeypatch, "im2col", "im2col")
    assert all(np.array_equal(reference[k], im2col[k]) for k in reference), \
        "CAFFE_CPU_CONV=im2col in one chunk makes the unpatched BLAS calls"


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


def child_peak_mb(path):
    env = dict(os.environ, CAFFE_CPU_REFERENCE="1" if path == "reference" else "0",
               CAFFE_CPU_CONV="onednn" if path == "onednn" else "im2col")
    env.pop("CAFFE_CONV_WORKSPACE_MB", None)
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=common.ROOT)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_shared_workspace_lowers_peak_memory():
    """Full-width FCN-8s forward at 200x200 (pad 100: conv1_2 works on
    398x398): the per-layer im2col buffers sum to ~1 GB (conv1_2's alone is
    576 x 396^2 floats, 361 MB); the shared, capped workspace is 64 MB
    (measured: 1823 MB unpatched, 870 MB patched)."""
    reference, patched = child_peak_mb("reference"), child_peak_mb("im2col")
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


def random_net(tmp_path, text, seed):
    """A TEST net from prototxt text with N(0, 1) parameters and inputs; (net, its rng)."""
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.RandomState(seed)
    for params in net.params.values():
        for p in params:
            p.data[...] = rng.randn(*p.data.shape)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.randn(*net.blobs[name].data.shape)
    return net, rng


def test_convolution_variants_match_unpatched(tmp_path, monkeypatch):
    """Groups, dilation, rectangular kernels and strides, 1x1, batch 2, and
    deconvolutions whose weights learn (their backward reuses the im2col of
    the weight gradient when it fits one chunk), with all gradients."""
    net, rng = random_net(tmp_path, VARIANTS, 0)
    top_diff = rng.randn(*net.blobs["up_grouped"].data.shape)

    def step(forward_path, backward_path):
        for params in net.params.values():
            for p in params:
                p.diff[...] = 0
        use_path(monkeypatch, forward_path)
        net.forward()
        net.blobs["up_grouped"].diff[...] = top_diff
        use_path(monkeypatch, backward_path)
        net._backward(len(net.layers) - 1, 0)
        out = {name: blob.data.copy() for name, blob in net.blobs.items()}
        out.update({f"{name} diff": blob.diff.copy() for name, blob in net.blobs.items()})
        out.update({f"{name}[{i}] diff": p.diff.copy()
                    for name, params in net.params.items() for i, p in enumerate(params)})
        return out

    monkeypatch.delenv("CAFFE_CONV_WORKSPACE_MB", raising=False)
    reference = step("reference", "reference")
    assert np.abs(reference["data diff"]).max() > 0 and np.abs(reference["up[0] diff"]).max() > 0
    patched = step("im2col", "im2col")
    assert all(np.array_equal(reference[k], patched[k]) for k in reference), \
        "one chunk per convolution must make the unpatched BLAS calls"
    # no max-pooling here: oneDNN's whole step is compared at once
    assert_close(reference, step("onednn", "onednn"), "oneDNN")
    monkeypatch.setenv("CAFFE_CONV_WORKSPACE_MB", TINY_CAP_MB)
    assert_close(reference, step("im2col", "im2col"), "tiny workspace")


REORDER_NET = """
input: "data" input_shape { dim: 1 dim: 16 dim: 20 dim: 24 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "conv" top: "up"
        convolution_param { num_output: 16 kernel_size: 4 stride: 2 bias_term: false } }
"""


def onednn_log(capfd):
    """CAFFE_ONEDNN_LOG's stderr messages since the last call, without their prefix."""
    prefix = "caffe onednn: "
    return [line[len(prefix):] for line in capfd.readouterr().err.splitlines()
            if line.startswith(prefix)]


def reorders(capfd):
    """{layer: weight reorders} from CAFFE_ONEDNN_LOG since the last call."""
    counts = {}
    for message in onednn_log(capfd):
        if " weights reordered for " in message:
            layer = message.split()[0]
            counts[layer] = counts.get(layer, 0) + 1
    return counts


def test_onednn_reorders_weights_once_and_sees_python_writes(tmp_path, monkeypatch, capfd):
    """A deploy net reorders each layer's weights into oneDNN's layout on the
    first forward only (not again for the same or a new input shape), and a
    write through net.params[...][0].data is picked up by the next forward,
    for a Convolution and a Deconvolution (the classic weight-caching bug)."""
    net, rng = random_net(tmp_path, REORDER_NET, 3)
    use_path(monkeypatch, "onednn")
    monkeypatch.setenv("CAFFE_ONEDNN_LOG", "1")
    capfd.readouterr()

    net.forward()
    assert reorders(capfd) == {"conv": 1, "up": 1}
    first = net.blobs["up"].data.copy()
    net.forward()
    assert reorders(capfd) == {}
    assert np.array_equal(first, net.blobs["up"].data)
    net.blobs["data"].reshape(1, 16, 17, 21)
    net.reshape()
    net.blobs["data"].data[...] = rng.randn(1, 16, 17, 21)
    net.forward()
    assert reorders(capfd) == {}

    for layer in ("conv", "up"):
        net.params[layer][0].data[...] *= -0.5
        net.forward()
        assert reorders(capfd) == {layer: 1}
        onednn = {"up": net.blobs["up"].data.copy()}
        use_path(monkeypatch, "reference")
        net.forward()
        use_path(monkeypatch, "onednn")
        assert_close({"up": net.blobs["up"].data.copy()}, onednn, f"after writing {layer}'s weights")


def test_cpu_conv_switch_rejects_an_unknown_path(tmp_path):
    path = tmp_path / "reorder.prototxt"
    path.write_text(REORDER_NET)
    code = (f"import caffe; net = caffe.Net({str(path)!r}, caffe.TEST); net.forward()")
    env = dict(os.environ, CAFFE_CPU_CONV="gemm", CAFFE_CPU_REFERENCE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "CAFFE_CPU_CONV=gemm: expected 'onednn' or 'im2col'" in out.stderr


FC6_LIKE_NET = """
force_backward: true
input: "data" input_shape { dim: 1 dim: 512 dim: 5 dim: 4 }
layer { name: "fc" type: "Convolution" bottom: "data" top: "fc"
        convolution_param { num_output: 4096 kernel_size: 2 } }
"""


def test_onednn_fc6_like_layer_keeps_caffe_layout(tmp_path, monkeypatch, capfd):
    """A layer with 32 MiB of weights (512 x 4096 x 2 x 2, like fc6/fc7) is
    never copied into a blocked layout (no reorder line), and its forward,
    data and weight gradients match the unpatched path."""
    net, rng = random_net(tmp_path, FC6_LIKE_NET, 4)
    top_diff = rng.randn(*net.blobs["fc"].data.shape)
    monkeypatch.setenv("CAFFE_ONEDNN_LOG", "1")

    def step(path):
        for p in net.params["fc"]:
            p.diff[...] = 0
        use_path(monkeypatch, path)
        net.forward()
        net.blobs["fc"].diff[...] = top_diff
        net.backward()
        return {"fc": net.blobs["fc"].data.copy(), "data diff": net.blobs["data"].diff.copy(),
                "fc[0] diff": net.params["fc"][0].diff.copy()}

    reference = step("reference")
    capfd.readouterr()
    onednn = step("onednn")
    assert reorders(capfd) == {}
    assert_close(reference, onednn, "fc6-like layer")


UPSCORE_459_NET = """
force_backward: true
input: "score" input_shape { dim: 1 dim: 459 dim: 5 dim: 6 }
layer { name: "upscore8" type: "Deconvolution" bottom: "score" top: "upscore8"
        convolution_param { num_output: 459 kernel_size: 16 stride: 8 bias_term: false } }
"""


def declined(capfd):
    """{(layer, direction): oneDNN implementation} that CAFFE_ONEDNN_LOG says went to im2col."""
    found = {}
    for message in onednn_log(capfd):
        if message.endswith("; im2col + GEMM instead"):
            head, impl = message.split(": oneDNN has only ")
            layer, direction = head.split(" ", 1)
            found[(layer, direction)] = impl.split(" for this shape")[0]
    return found


def test_onednn_declines_its_reference_kernels_for_im2col(tmp_path, monkeypatch, capfd):
    """The 459-class PASCAL-Context FCN-8s upscore (459 x 459 x 16 x 16,
    216 MB of weights, so Caffe's layouts): oneDNN 3.7 offers only its
    reference loop nest (inside jit_uni_ncsp_convolution) for its forward
    and data gradient, seconds per call even on a 5x6 score map. Whatever a direction falls back to, forward, data and weight
    gradients match the unpatched path (the weight gradient may come from
    oneDNN and the data gradient from im2col, which must then build its own
    column buffer), and every fallback names a reference ("ref:") kernel."""
    net, rng = random_net(tmp_path, UPSCORE_459_NET, 5)
    top_diff = rng.randn(*net.blobs["upscore8"].data.shape)
    monkeypatch.setenv("CAFFE_ONEDNN_LOG", "1")

    def step(path):
        net.params["upscore8"][0].diff[...] = 0
        use_path(monkeypatch, path)
        net.forward()
        net.blobs["upscore8"].diff[...] = top_diff
        net.backward()
        return {"upscore8": net.blobs["upscore8"].data.copy(),
                "score diff": net.blobs["score"].diff.copy(),
                "upscore8[0] diff": net.params["upscore8"][0].diff.copy()}

    reference = step("reference")
    capfd.readouterr()
    onednn = step("onednn")
    fallbacks = declined(capfd)
    assert all(layer == "upscore8" and "ref" in re.split(r"[:+,]", impl)
               for (layer, _), impl in fallbacks.items()), fallbacks
    print("oneDNN declined:", fallbacks or "nothing")
    assert_close(reference, onednn, "459-class upscore")
    step("onednn")                                       # the choice is made once per shape
    assert declined(capfd) == {}
