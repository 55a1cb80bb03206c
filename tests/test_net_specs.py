"""net_specs against real Caffe: names, shapes, multipliers, alignment, losses."""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffe

from net_specs import CLASSIFIERS, MODELS, build, classifier
from net_specs.models import input_tops
from surgery.io import default_input_shape, replace_data_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NARROW = 1 / 16


def layers_by_name(proto):
    return {layer.name: layer for layer in proto.layer}


def net_from(proto, tmp_path, phase=caffe.TEST, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(str(proto))
    return caffe.Net(str(path), phase)


def with_inputs(proto, h, w):
    """The net with its Python data layer replaced by Input layers of size h x w."""
    tops = [t for layer in proto.layer if layer.type == "Python" for t in layer.top]
    assert tops
    return replace_data_layers(proto, {t: default_input_shape(t)[:2] + (h, w) for t in tops})


def image_tops(model):
    return input_tops(MODELS[model])[1]


def reshape_to(net, tops, h, w):
    for top in tops:
        c = net.blobs[top].data.shape[1]
        net.blobs[top].reshape(1, c, h, w)
    net.reshape()


# ---------------------------------------------------------------- emission

@pytest.mark.parametrize("model", sorted(MODELS))
def test_deploy_instantiates_full_width(model, tmp_path):
    proto = build(model, "deploy", size=(64, 64))
    net = net_from(proto, tmp_path)
    for head in MODELS[model].get_dataset().heads:
        score = net.blobs["score" + head.suffix].data
        assert score.shape == (1, head.n_classes, 64, 64)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifiers_have_published_shapes(name, tmp_path):
    net = net_from(classifier(name, batch=1), tmp_path)
    assert net.blobs["prob"].data.shape == (1, 1000)
    if name == "vgg16-ilsvrc":
        assert net.params["conv1_1"][0].data.shape == (64, 3, 3, 3)
        assert net.params["fc6"][0].data.shape == (4096, 25088)
        assert [k for k in net.params][:2] == ["conv1_1", "conv1_2"]
    else:
        assert net.params["conv1"][0].data.shape == (96, 3, 11, 11)
        assert net.params["conv2"][0].data.shape == (256, 48, 5, 5)   # group 2
        assert net.params["fc6"][0].data.shape == (4096, 9216)
    assert net.params["fc8"][0].data.shape == (1000, 4096)


def test_vgg_fcn_parameters_match_reference(tmp_path):
    net = net_from(build("voc-fcn8s", "deploy", size=(64, 64)), tmp_path)
    expect = {
        "conv1_1": (64, 3, 3, 3), "conv5_3": (512, 512, 3, 3),
        "fc6": (4096, 512, 7, 7), "fc7": (4096, 4096, 1, 1),
        "score_fr": (21, 4096, 1, 1), "upscore2": (21, 21, 4, 4),
        "score_pool4": (21, 512, 1, 1), "upscore_pool4": (21, 21, 4, 4),
        "score_pool3": (21, 256, 1, 1), "upscore8": (21, 21, 16, 16),
    }
    for name, shape in expect.items():
        assert net.params[name][0].data.shape == shape, name
    for deconv in ("upscore2", "upscore_pool4", "upscore8"):
        assert len(net.params[deconv]) == 1          # bias_term: false


def test_vgg_fcn8s_layer_rules():
    proto = build("voc-fcn8s", "train")
    layers = layers_by_name(proto)
    names = [l.name for l in proto.layer]
    for name in ("score_fr", "upscore2", "score_pool4", "score_pool4c", "fuse_pool4",
                 "upscore_pool4", "score_pool3", "score_pool3c", "fuse_pool3", "upscore8",
                 "score", "loss"):
        assert name in names
    assert layers["conv1_1"].convolution_param.pad == [100]
    assert all(layers[f"conv{b}_1"].convolution_param.pad == [1] for b in range(2, 6))
    fc6, fc7 = layers["fc6"].convolution_param, layers["fc7"].convolution_param
    assert (fc6.kernel_size, fc6.num_output, fc7.kernel_size) == ([7], 4096, [1])
    assert layers["drop6"].dropout_param.dropout_ratio == 0.5
    assert layers["drop7"].dropout_param.dropout_ratio == 0.5
    for layer in proto.layer:
        if layer.type == "Convolution":
            assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(1, 1), (2, 0)], layer.name
        if layer.type == "Deconvolution":
            assert not layer.convolution_param.bias_term
            assert [p.lr_mult for p in layer.param] == [0]
    for score in ("score_fr", "score_pool4", "score_pool3"):
        assert not layers[score].convolution_param.HasField("weight_filler")  # zero init
    crops = {l.name: list(l.crop_param.offset) for l in proto.layer if l.type == "Crop"}
    assert crops == {"score_pool4c": [5], "score_pool3c": [9], "score": [31]}
    loss = layers["loss"]
    assert loss.type == "SoftmaxWithLoss" and list(loss.bottom) == ["score", "label"]
    assert loss.loss_param.ignore_label == 255 and loss.loss_param.normalize is False
    data = layers["data"]
    assert data.python_param.module == "layers.sbdd"
    assert layers_by_name(build("voc-fcn8s", "val"))["data"].python_param.module == "layers.voc"


def test_strides_16_and_32_layouts():
    n16 = [l.name for l in build("voc-fcn16s", "deploy").layer]
    assert n16[-6:] == ["upscore2", "score_pool4", "score_pool4c", "fuse_pool4", "upscore16", "score"]
    n32 = [l.name for l in build("voc-fcn32s", "deploy").layer]
    assert n32[-3:] == ["score_fr", "upscore", "score"]
    up = layers_by_name(build("voc-fcn32s", "deploy"))["upscore"].convolution_param
    assert (up.kernel_size, up.stride) == ([64], [32])


def test_atonce_scales_skips_with_fixed_scale_layers():
    layers = layers_by_name(build("voc-fcn8s-atonce", "train"))
    for pool, value in (("pool4", 0.01), ("pool3", 0.0001)):
        scale = layers[f"scale_{pool}"]
        assert scale.type == "Scale" and list(scale.bottom) == [pool]
        assert scale.scale_param.filler.value == pytest.approx(value)
        assert [p.lr_mult for p in scale.param] == [0]
        assert list(layers[f"score_{pool}"].bottom) == [f"scale_{pool}"]


def test_atonce_scale_values_in_caffe(tmp_path):
    net = net_from(build("voc-fcn8s-atonce", "deploy", size=(64, 64), width=NARROW), tmp_path)
    assert np.allclose(net.params["scale_pool4"][0].data, 0.01)
    assert np.allclose(net.params["scale_pool3"][0].data, 0.0001)


def test_alexnet_family():
    proto = build("voc-fcn-alexnet", "train")
    layers = layers_by_name(proto)
    assert layers["conv1"].convolution_param.pad == [100]
    assert layers["conv1"].convolution_param.stride == [4]
    assert layers["fc6"].convolution_param.kernel_size == [6]
    up = layers["upscore"].convolution_param
    assert (up.kernel_size, up.stride, up.bias_term) == ([63], [32], False)
    assert list(layers["score"].crop_param.offset) == [18]
    assert layers["loss"].loss_param.normalize is True
    names = [l.name for l in proto.layer]
    assert names.index("pool1") < names.index("norm1")       # CaffeNet order


def test_googlenet_family(tmp_path):
    proto = build("voc-fcn-googlenet", "deploy", size=(64, 64))
    layers = layers_by_name(proto)
    assert "inception_5b/output" in layers and "loss3/classifier" not in layers
    assert list(layers["score_fr"].bottom) == ["inception_5b/output"]
    net = net_from(proto, tmp_path)
    assert net.params["inception_4a/3x3"][0].data.shape == (208, 96, 3, 3)
    assert net.blobs["score"].data.shape == (1, 21, 64, 64)


def test_siftflow_two_heads():
    proto = build("siftflow-fcn8s", "train")
    layers = layers_by_name(proto)
    assert list(layers["data"].top) == ["data", "sem", "geo"]
    for s, k in (("_sem", 33), ("_geo", 3)):
        for name in ("score_fr", "upscore2", "score_pool4", "fuse_pool4", "upscore_pool4",
                     "score_pool3", "fuse_pool3", "upscore8", "score"):
            assert name + s in layers, name + s
        assert f"score_pool4{s}c" in layers and f"score_pool3{s}c" in layers
        assert layers["score_fr" + s].convolution_param.num_output == k
    assert list(layers["loss"].bottom) == ["score_sem", "sem"]
    assert list(layers["loss_geo"].bottom) == ["score_geo", "geo"]


def test_nyud_variants():
    color = layers_by_name(build("nyud-fcn32s-color", "train"))
    assert list(color["data"].top) == ["data", "label"]
    assert '"tops": ["color", "label"]' in color["data"].python_param.param_str
    assert color["score_fr"].convolution_param.num_output == 40
    early = layers_by_name(build("nyud-fcn32s-color-d", "train"))
    assert early["data"].type == "Concat" and list(early["data"].bottom) == ["color", "depth"]
    assert "conv1_1_bgrd" in early and "conv1_1" not in early
    late = build("nyud-fcn32s-color-hha", "train")
    layers = layers_by_name(late)
    for stream in ("color", "hha"):
        assert f"conv1_1{stream}" in layers and f"fc7{stream}" in layers
        assert f"score_fr{stream}" in layers
    fused = layers["score_fused"]
    assert fused.type == "Eltwise" and list(fused.eltwise_param.coeff) == [0.5, 0.5]
    assert list(layers["score"].bottom) == ["upscore", "color"]


def test_nyud_early_fusion_first_conv_has_four_channels(tmp_path):
    net = net_from(build("nyud-fcn32s-color-d", "deploy", size=(32, 32)), tmp_path)
    assert net.params["conv1_1_bgrd"][0].data.shape == (64, 4, 3, 3)


def test_context_class_counts():
    assert layers_by_name(build("pascalcontext-fcn8s", "deploy"))["score_fr"].convolution_param.num_output == 60
    assert layers_by_name(build("pascalcontext459-fcn8s", "deploy"))["score_fr"].convolution_param.num_output == 460


# ---------------------------------------------------------------- alignment

FAMILY_REPRESENTATIVES = ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce",
                          "voc-fcn-alexnet", "voc-fcn-googlenet", "siftflow-fcn8s",
                          "nyud-fcn32s-color-d", "nyud-fcn32s-color-hha"]


@pytest.mark.parametrize("model", FAMILY_REPRESENTATIVES)
def test_score_is_input_size_for_every_size(model, tmp_path):
    """Every H and every W in 1..520 (plus non-square pairs): score is exactly H x W."""
    net = net_from(build(model, "deploy", size=(8, 8), width=NARROW), tmp_path)
    tops = image_tops(model)
    heads = MODELS[model].get_dataset().heads
    sizes = [(h, (h * 193) % 520 + 1) for h in range(1, 521)] + [(500, 375), (375, 500), (1, 520)]
    for h, w in sizes:
        reshape_to(net, tops, h, w)
        for head in heads:
            assert net.blobs["score" + head.suffix].data.shape[2:] == (h, w), (model, h, w)


# ---------------------------------------------------------------- training

@pytest.mark.parametrize("model", FAMILY_REPRESENTATIVES + ["pascalcontext-fcn32s", "nyud-fcn32s-hha"])
def test_forward_backward_finite_loss(model, tmp_path):
    proto = with_inputs(build(model, "train", width=NARROW), 45, 61)
    net = net_from(proto, tmp_path, caffe.TRAIN)
    rng = np.random.RandomState(0)
    for top in image_tops(model):
        net.blobs[top].data[...] = rng.randn(*net.blobs[top].data.shape) * 50
    for head in MODELS[model].get_dataset().heads:
        label = rng.randint(0, head.n_classes, size=net.blobs[head.label].data.shape)
        label[..., :3, :] = 255                               # some void
        net.blobs[head.label].data[...] = label
    for name, blobs in net.params.items():                  # random, nonzero weights
        blobs[0].data[...] = rng.randn(*blobs[0].data.shape) * 0.05
    out = net.forward()
    net.backward()
    losses = [v for k, v in out.items() if k.startswith("loss")]
    assert losses and all(np.isfinite(float(v)) and float(v) > 0 for v in losses)
    first = next(iter(net.params))
    assert np.isfinite(net.params[first][0].diff).all()
    assert np.abs(net.params[first][0].diff).sum() > 0


# ---------------------------------------------------------------- CLI

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "net_specs", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def test_cli_list_names_every_model():
    out = run_cli("list")
    assert out.returncode == 0
    for name in list(MODELS) + list(CLASSIFIERS):
        assert name in out.stdout


def test_cli_emit_writes_three_parsable_prototxts(tmp_path):
    out = run_cli("emit", "voc-fcn8s", "--out", str(tmp_path / "m"))
    assert out.returncode == 0, out.stderr
    for phase in ("train", "val", "deploy"):
        text = (tmp_path / "m" / f"{phase}.prototxt").read_text()
        assert 'name: "score"' in text


def test_cli_custom_dataset(tmp_path):
    out = run_cli("emit", "fcn8s", "--dataset", "folder", "--classes", "5", "--mean", "1,2,3",
                  "--root", "/data/mine", "--out", str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "c" / "train.prototxt").read_text()
    assert "layers.folder" in text and "/data/mine" in text and "num_output: 5" in text
    assert "[1.0, 2.0, 3.0]" in text


@pytest.mark.parametrize("args, message", [
    (["emit", "fcn8s", "--dataset", "folder", "--classes", "0"], "--classes"),
    (["emit", "fcn8s", "--classes", "3", "--mean", "1,2"], "--mean"),
    (["emit", "fcn8s", "--classes", "3", "--mean", "a,b,c"], "--mean"),
    (["emit", "no-such-model"], "unknown model"),
    (["emit", "fcn8s"], "--classes"),
])
def test_cli_rejects_bad_arguments_and_writes_nothing(args, message, tmp_path):
    out = run_cli(*args, "--out", str(tmp_path / "x"))
    assert out.returncode != 0
    assert message in out.stderr
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- with real data layers

@pytest.fixture(scope="module")
def fixture_roots(tmp_path_factory):
    """Tiny datasets in each format, with the split names the models use."""
    from data import layouts as fx
    base = tmp_path_factory.mktemp("datasets")
    roots = {
        "sbdd": fx.write_sbdd(str(base / "sbdd"), [("s0", (37, 45))], split="train"),
        "voc": fx.write_voc(str(base / "voc"), [("v0", (41, 33))], split="seg11valid"),
        "nyud": str(base / "nyud"), "siftflow": str(base / "siftflow"),
        "folder": str(base / "folder"),
    }
    for split in ("trainval", "test"):
        fx.write_nyud(roots["nyud"], [(f"{split}1", (35, 43))], split=split)
        fx.write_siftflow(roots["siftflow"], [(f"{split}1", (39, 31))], split=split)
    for split in ("train", "val"):
        fx.write_folder(roots["folder"], [(f"{split}1", (33, 35))], split=split)
        fx.write_pascalcontext(str(base / "context"), str(base / "voc2010"),
                               [(f"{split}1", (43, 37))], split=split)
    roots["context"], roots["voc2010"] = str(base / "context"), str(base / "voc2010")
    return roots


def dataset_on_fixtures(model, roots):
    from dataclasses import replace
    ds = MODELS[model].get_dataset()
    name = ds.name
    if name == "voc":
        return replace(ds, train=replace(ds.train, root=roots["sbdd"]),
                       val=replace(ds.val, root=roots["voc"]))
    if name.startswith("pascalcontext"):
        params = tuple((k, roots["voc2010"] if k == "voc_root" else v) for k, v in ds.train.params)
        return replace(ds, train=replace(ds.train, root=roots["context"], params=params),
                       val=replace(ds.val, root=roots["context"], params=params))
    root = roots[name]
    return replace(ds, train=replace(ds.train, root=root), val=replace(ds.val, root=root))


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("phase", ["train", "val"])
def test_train_and_val_nets_run_on_their_data_layers(model, phase, fixture_roots, tmp_path):
    """Every train/val prototxt instantiates with its real Python data layer
    on fixture data in the dataset's format, and a forward gives a finite loss."""
    dataset = dataset_on_fixtures(model, fixture_roots)
    proto = build(model, phase, dataset=dataset, width=NARROW)
    net = net_from(proto, tmp_path, caffe.TRAIN if phase == "train" else caffe.TEST)
    out = net.forward()
    losses = [float(v) for k, v in out.items() if k.startswith("loss")]
    assert losses and all(np.isfinite(losses))
    for head in dataset.heads:
        score = net.blobs["score" + head.suffix].data
        label = net.blobs[head.label].data
        assert score.shape[1] == head.n_classes and score.shape[2:] == label.shape[2:]


# ------------------------------------------- a new dataset is a new record

def test_a_new_dataset_record_needs_no_new_code():
    """An RGB-D dataset described only by a record (NYUD's input variants,
    its own means and location) builds early- and late-fusion nets whose
    data layer gets the tops and means from the record."""
    import json
    from dataclasses import replace
    from net_specs.datasets import NYUD_INPUTS, Dataset, Head, Source
    layer = "layers.nyud.NYUDSegDataLayer"
    rgbd = Dataset("rgbd", "an RGB-D dataset", (1.0, 2.0, 3.0), (Head("label", 7),),
                   train=Source(layer, "datasets/rgbd", "train"), val=Source(layer, "datasets/rgbd", "val"),
                   inputs=NYUD_INPUTS, extra_means=(("mean_hha", (4.0, 5.0, 6.0)),))
    early = replace(MODELS["nyud-fcn32s-color-d"], dataset="rgbd")
    proto = build(early, "train", dataset=rgbd, width=NARROW)
    layers = layers_by_name(proto)
    params = json.loads(proto.layer[0].python_param.param_str)
    assert params["tops"] == ["color", "depth", "label"] and params["n_classes"] == 7
    assert params["mean"] == [1.0, 2.0, 3.0] and params["mean_hha"] == [4.0, 5.0, 6.0]
    assert layers["data"].type == "Concat" and "conv1_1_bgrd" in layers
    late = replace(MODELS["nyud-fcn32s-color-hha"], dataset="rgbd")
    names = layers_by_name(build(late, "deploy", dataset=rgbd, width=NARROW))
    assert {"conv1_1color", "conv1_1hha", "score_frcolor", "score_frhha", "score_fused"} <= set(names)
    assert rgbd.image_mean("hha") == (4.0, 5.0, 6.0) and rgbd.image_mean("color") == (1.0, 2.0, 3.0)


def test_palettes_and_present_only_come_from_the_records():
    from common.palette import palette_for, voc_palette
    from net_specs import get_dataset
    for name in ("voc", "pascalcontext"):
        d = get_dataset(name)
        np.testing.assert_array_equal(palette_for(d.n_classes, d.voc_colours), voc_palette())
    for name in ("nyud", "siftflow", "pascalcontext459"):
        d = get_dataset(name)
        assert not np.array_equal(palette_for(d.n_classes, d.voc_colours)[:d.n_classes],
                                  voc_palette()[:d.n_classes])
