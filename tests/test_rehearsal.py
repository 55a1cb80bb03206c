"""The full-scale rehearsal: the published path at real size, on the CPU build.

A full-width VGG16 ILSVRC caffemodel (random weights, the real 553 MB, in the
legacy V1 format of the published file) goes through `surgery convert` into
full-width voc-fcn32s; FCN-32s -> 16s -> 8s train 1, 1 and 2 iterations on a small
SBD + VOC fixture of real-size 500x375 images laid out as the real datasets
(`datasets/sbdd/dataset`, `datasets/pascal/VOC2011`); the 8s run is resumed
from its snapshot, in place and from a copied run directory; the result is
scored and segments a 500x375 and a 2000x1500 photo. Every step is one of the
README's commands in a subprocess; each step's time and peak memory are printed
(run with -s) and written to rehearsal.json in the test's directory.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from caffe.proto import caffe_pb2
from PIL import Image

from net_specs.classifiers import classifier
from data import layouts as F

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOBUF_DEFAULT_LIMIT = 512 * 2 ** 20
V1_TYPES = {"Convolution": caffe_pb2.V1LayerParameter.CONVOLUTION,
            "InnerProduct": caffe_pb2.V1LayerParameter.INNER_PRODUCT}


# ------------------------------------------------------------ the V1 caffemodel

def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _number(message, name):
    return message.DESCRIPTOR.fields_by_name[name].number


def write_v1_vgg16(path, seed=0):
    """VGG16's ILSVRC caffemodel as published (V1 `layers`, 4-d legacy blobs),
    with He-scaled random weights. The float arrays are written as packed
    fields directly: building a 138M-float protobuf message in Python would
    take minutes. Returns the file size."""
    deploy = classifier("vgg16-ilsvrc")
    rng = np.random.default_rng(seed)
    net_layers = _number(caffe_pb2.NetParameter, "layers")
    blobs_field = _number(caffe_pb2.V1LayerParameter, "blobs")
    data_field = _number(caffe_pb2.BlobProto, "data")
    shapes = {}                                   # layer -> (weight shape, bias length)
    tops = {deploy.layer[0].top[0]: (3, 224, 224)}
    for layer in deploy.layer[1:]:
        c, h, w = tops[layer.bottom[0]]
        if layer.type == "Convolution":
            n = layer.convolution_param.num_output
            shapes[layer.name] = ("Convolution", (n, c, 3, 3), n)
            tops[layer.top[0]] = (n, h, w)
        elif layer.type == "Pooling":
            tops[layer.top[0]] = (c, h // 2, w // 2)
        elif layer.type == "InnerProduct":
            n = layer.inner_product_param.num_output
            shapes[layer.name] = ("InnerProduct", (1, 1, n, c * h * w), n)   # legacy 1x1xOxI
            tops[layer.top[0]] = (n, 1, 1)
        else:
            tops[layer.top[0]] = (c, h, w)
    with open(path, "wb") as f:
        f.write(_field(_number(caffe_pb2.NetParameter, "name"), b"VGG_ILSVRC_16_layers"))
        for name, (kind, wshape, n_out) in shapes.items():
            count = int(np.prod(wshape))
            weights = rng.standard_normal(count, np.float32)
            weights *= np.float32(np.sqrt(2.0 / (count // n_out)))      # He: fan-in = count / outputs
            blobs = []
            for dims, values in ((wshape, weights), ((1, 1, 1, n_out), np.full(n_out, 0.01, np.float32))):
                head = caffe_pb2.BlobProto(num=dims[0], channels=dims[1], height=dims[2], width=dims[3])
                blobs.append(head.SerializeToString() + _field(data_field, values.astype("<f4").tobytes()))
            layer = caffe_pb2.V1LayerParameter(name=name, type=V1_TYPES[kind]).SerializeToString()
            layer += b"".join(_field(blobs_field, b) for b in blobs)
            f.write(_field(net_layers, layer))
    return os.path.getsize(path)


# ------------------------------------------------------------------ the steps

class Steps:
    """Runs each command in `cwd`, timing it and keeping its peak RSS."""

    def __init__(self, cwd):
        self.cwd, self.rows = cwd, []
        self.env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")

    def run(self, name, module, *args, expect=0):
        code = ("import runpy, sys; from common.report import peak_rss_mb; sys.argv = sys.argv[1:]\n"
                "try:\n    runpy.run_module(sys.argv[0], run_name='__main__')\n"
                "finally:\n    print('peak_rss_mb', int(peak_rss_mb()), file=sys.stderr)")
        start = time.time()
        r = subprocess.run([sys.executable, "-c", code, module, *map(str, args)], cwd=self.cwd,
                           env=self.env, capture_output=True, text=True, timeout=1800)
        seconds = time.time() - start
        peak = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("peak_rss_mb")]
        self.rows.append({"step": name, "seconds": round(seconds, 1),
                          "peak_rss_mb": peak[0] if peak else None, "rc": r.returncode})
        print(f"{name}: {seconds:.0f} s, peak RSS {self.rows[-1]['peak_rss_mb']} MB", flush=True)
        assert r.returncode == expect, f"{name}: rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr and "Check failed" not in r.stderr, r.stderr[-3000:]
        return r


def same_weights(a, b):
    """Every blob of caffemodels a and b equal (by layer name)."""
    pa, pb = caffe_pb2.NetParameter(), caffe_pb2.NetParameter()
    pa.ParseFromString(open(a, "rb").read())
    pb.ParseFromString(open(b, "rb").read())
    blobs = {(layer.name, j): np.asarray(blob.data, np.float32)
             for layer in pb.layer for j, blob in enumerate(layer.blobs)}
    for layer in pa.layer:
        for j, blob in enumerate(layer.blobs):
            if not np.array_equal(np.asarray(blob.data, np.float32), blobs.pop((layer.name, j))):
                return False
    return not blobs


def photo(path, height, width, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 25, width // 25, 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.BICUBIC).save(path, quality=90)


def test_full_scale_rehearsal(tmp_path):
    t0 = time.time()
    work = tmp_path
    sbd = F.write_sbdd(str(work / "datasets/sbdd/dataset"), [("2008_000002", (375, 500)),
                                                           ("2008_000003", (500, 375))], seed=1)
    F.write_voc(str(work / "datasets/pascal/VOC2011"), [("2007_000033", (375, 500))], seed=2,
                split="seg11valid")
    assert os.path.isdir(sbd)
    steps = Steps(str(work))

    # -- the ImageNet classifier as published, and surgery -----------------------
    os.makedirs(work / "weights")
    vgg = work / "weights" / "VGG_ILSVRC_16_layers.caffemodel"
    size = write_v1_vgg16(vgg)
    assert size > PROTOBUF_DEFAULT_LIMIT, size          # past protobuf's default 512 MiB
    steps.run("emit prototxts", "net_specs", "emit", "vgg16-ilsvrc")
    steps.run("emit prototxts", "net_specs", "emit", "voc-fcn32s")
    init = work / "weights" / "voc-fcn32s-init.caffemodel"
    r = steps.run("surgery convert (553 MB V1 VGG16)", "surgery", "convert",
                  "--src-proto", "models/vgg16-ilsvrc/deploy.prototxt", "--src-weights", vgg,
                  "--dst-proto", "models/voc-fcn32s/train.prototxt", "--out", init)
    table = {line.split()[0]: line.split()[2] for line in r.stdout.splitlines()
             if line.startswith(("conv", "fc"))}
    assert table["fc6"] == table["fc7"] == "coerced" and table["conv5_3"] == "copied"
    assert table["fc8"] == "dropped"

    # -- FCN-32s -> 16s -> 8s -------------------------------------------------
    common = ("--cpu", "--score-every", "0")
    steps.run("solve voc-fcn32s (1 iter)", "solvers.solve", "voc-fcn32s", "--weights", init,
              "--iters", 1, *common)
    fcn32 = work / "runs/voc-fcn32s/final.caffemodel"
    assert os.path.getsize(fcn32) > PROTOBUF_DEFAULT_LIMIT
    steps.run("solve voc-fcn16s (1 iter)", "solvers.solve", "voc-fcn16s", "--weights", fcn32,
              "--iters", 1, *common)
    shutil.rmtree(work / "runs/voc-fcn32s/snapshots")                  # disk: 1 GB each
    steps.run("solve voc-fcn8s (2 iters)", "solvers.solve", "voc-fcn8s",
              "--weights", work / "runs/voc-fcn16s/final.caffemodel", "--iters", 2,
              "--snapshot-every", 1, *common)
    shutil.rmtree(work / "runs/voc-fcn16s/snapshots")
    run8 = work / "runs/voc-fcn8s"
    metrics = [json.loads(line) for line in open(run8 / "metrics.jsonl")]
    assert metrics[-1]["iteration"] == 2 and 0 <= metrics[-1]["mean_iu"] <= 1
    uninterrupted = work / "uninterrupted_iter_2.caffemodel"
    shutil.copyfile(run8 / "snapshots/train_iter_2.caffemodel", uninterrupted)

    # -- resume in place -------------------------------------------------------
    steps.run("resume voc-fcn8s in place (1 iter)", "solvers.solve", "voc-fcn8s",
              "--resume", run8 / "snapshots/train_iter_1.solverstate", "--iters", 1, *common)
    assert same_weights(run8 / "final.caffemodel", uninterrupted), \
        "resuming from iteration 1 did not reproduce the uninterrupted iteration 2"
    # -- score and infer ------------------------------------------------------
    final = run8 / "final.caffemodel"
    steps.run("score voc-fcn8s on seg11valid", "solvers.score", "voc-fcn8s", final,
              "--split", "seg11valid", "--cpu", "--out", work / "scores.json")
    scores = json.load(open(work / "scores.json"))
    assert "mean_iu" in json.dumps(scores)
    photo(work / "small.jpg", 375, 500, seed=3)
    photo(work / "large.jpg", 1500, 2000, seed=4)
    steps.run("infer 500x375 (one pass)", "solvers.infer", "voc-fcn8s", final, "small.jpg",
              "--out", work / "predictions", "--cpu")
    steps.run("infer 2000x1500 (tiles, default --max-pixels)", "solvers.infer", "voc-fcn8s", final,
              "large.jpg", "--out", work / "predictions", "--cpu")
    for stem, shape in (("small", (375, 500)), ("large", (1500, 2000))):
        labels = np.asarray(Image.open(work / "predictions" / f"{stem}.png"))
        assert labels.shape == shape and labels.max() < 21

    # -- resume from a copied run directory (last: it fails until the solve driver
    # stores the weights' path relative to the .solverstate; see the issue) ----
    copy = work / "runs/voc-fcn8s-copy"
    shutil.copytree(run8, copy)
    # the original directory moves on (here: its iteration-1 weights are replaced)
    shutil.copyfile(uninterrupted, run8 / "snapshots/train_iter_1.caffemodel")
    steps.run("resume voc-fcn8s from a copied run dir (1 iter)", "solvers.solve", "voc-fcn8s",
              "--resume", copy / "snapshots/train_iter_1.solverstate", "--iters", 1,
              "--out", copy, *common)
    from_copy = same_weights(copy / "final.caffemodel", uninterrupted)

    total = time.time() - t0
    peak = max(row["peak_rss_mb"] for row in steps.rows)
    summary = {"total_seconds": round(total, 1), "peak_rss_mb": peak, "steps": steps.rows}
    (work / "rehearsal.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    assert from_copy, ("resuming from a copied run directory did not reproduce the uninterrupted "
                       "run: the .solverstate's weights were read from the original directory")
