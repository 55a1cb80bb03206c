"""surgery reinit-score: a trained FCN fine-tuned to a new class count keeps
every layer but its score (zero) and upscore (bilinear) layers."""
import os
import subprocess
import sys

import caffe
import numpy as np

from common.atomic import atomic_write
from net_specs import build
from net_specs.resolve import resolve
from surgery.bilinear import bilinear_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 1 / 16


def surgery(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", "surgery", *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def deploy_net(tmp_path, name, classes=None):
    model, data = resolve(name, None, classes, None)
    path = str(tmp_path / f"{name}-{classes}.prototxt")
    atomic_write(path, str(build(model, "deploy", dataset=data, width=WIDTH, size=(64, 64))))
    return caffe.Net(path, caffe.TEST)


def test_reinit_score_keeps_the_trunk_and_rebuilds_the_class_layers(tmp_path):
    trained = deploy_net(tmp_path, "voc-fcn8s")                     # 21 classes, "trained"
    rng = np.random.default_rng(0)
    for blobs in trained.params.values():
        for b in blobs:
            b.data[...] = rng.standard_normal(b.data.shape)
    weights = str(tmp_path / "voc-fcn8s.caffemodel")
    trained.save(weights)
    out = tmp_path / "fcn8s-5.caffemodel"
    r = surgery("reinit-score", "fcn8s", weights, "--classes", "5", "--width", "1/16", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "reinitialised" in r.stdout and "score_fr" in r.stdout

    net = deploy_net(tmp_path, "fcn8s", classes=5)
    net.copy_from(str(out))
    for name in ("conv1_1", "conv5_3", "fc6", "fc7"):
        for old, new in zip(trained.params[name], net.params[name]):
            np.testing.assert_array_equal(new.data, old.data)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert net.params[name][0].data.shape[0] == 5
        assert not any(b.data.any() for b in net.params[name])      # zero, as the reference
    for name in ("upscore2", "upscore_pool4", "upscore8"):
        w = net.params[name][0].data
        assert w.shape[:2] == (5, 5)
        np.testing.assert_allclose(w[3, 3], bilinear_kernel(w.shape[-1]), rtol=1e-6)
        assert not w[0, 1].any()
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].data.shape)
    assert net.forward()["score"].shape[1] == 5


def test_reinit_score_refuses_another_model_and_its_own_input(tmp_path):
    trained = deploy_net(tmp_path, "voc-fcn32s")
    weights = str(tmp_path / "w.caffemodel")
    trained.save(weights)
    r = surgery("reinit-score", "fcn32s", weights, "--classes", "5", "--width", "1/8",
                "--out", tmp_path / "o.caffemodel")
    assert r.returncode == 2 and "not a class-count change" in r.stderr, r.stderr
    r = surgery("reinit-score", "fcn32s", weights, "--classes", "5", "--width", "1/16",
                "--out", weights)
    assert r.returncode == 2 and "is the --weights input" in r.stderr
    assert not (tmp_path / "o.caffemodel").exists()
