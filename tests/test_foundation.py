"""The foundation: real pycaffe with the layers FCN needs, the shared build
script's caching, and the Docker image definition."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import caffe
from caffe import layers as L, params as P
from caffe.coord_map import crop
from google.protobuf import text_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ("Python", "Crop", "Deconvolution", "Eltwise", "SoftmaxWithLoss", "Scale")


def test_caffe_has_the_layers_fcn_needs():
    have = set(caffe.layer_type_list())
    assert set(REQUIRED) <= have


def toy_fcn():
    """Python data layer -> strided conv -> Deconvolution -> Crop (coord_map) -> loss."""
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module="tests.toy_layers", layer="RampData", ntop=2,
                               param_str=json.dumps(dict(h=21, w=27)))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, stride=2, pad=10,
                           weight_filler=dict(type="gaussian", std=0.1))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.score_fr = L.Convolution(n.relu, num_output=2, kernel_size=1,
                               weight_filler=dict(type="gaussian", std=0.1))
    n.upscore = L.Deconvolution(n.score_fr, convolution_param=dict(
        num_output=2, kernel_size=3, stride=2, bias_term=False,
        weight_filler=dict(type="gaussian", std=0.1)))
    n.score = crop(n.upscore, n.data)
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def test_sgd_step_with_python_layer_crop_and_deconvolution(tmp_path):
    net_path = tmp_path / "toy.prototxt"
    net_path.write_text(str(toy_fcn()))
    solver = caffe.proto.caffe_pb2.SolverParameter(
        train_net=str(net_path), base_lr=0.5, momentum=0.9, lr_policy="fixed",
        max_iter=100, display=0, snapshot_prefix=str(tmp_path / "s"), random_seed=1)
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(text_format.MessageToString(solver))
    sgd = caffe.SGDSolver(str(solver_path))
    crop_layer = [l for l in toy_fcn().layer if l.name == "score"][0]
    assert list(crop_layer.crop_param.offset) == [10]       # from coord_map, not hand-set
    sgd.step(1)
    first = float(sgd.net.blobs["loss"].data)
    assert sgd.net.blobs["score"].data.shape == (1, 2, 21, 27)
    sgd.step(20)
    last = float(sgd.net.blobs["loss"].data)
    assert np.isfinite(first) and np.isfinite(last)
    assert last < first - 1e-3


def test_build_script_reuses_the_cached_build():
    env = dict(os.environ, PYTHON=os.path.join(ROOT, ".venv", "bin", "python"))
    out = subprocess.run(["bash", os.path.join(ROOT, "docker", "build_caffe.sh")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "up-to-date build found" in out.stderr
    assert "building pycaffe" not in out.stderr


def test_dockerfile_is_lint_clean():
    hadolint = shutil.which("hadolint") or os.path.join(ROOT, ".venv", "bin", "hadolint")
    out = subprocess.run([hadolint, "--config", os.path.join(ROOT, ".hadolint.yaml"),
                          os.path.join(ROOT, "docker", "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_uses_the_shared_build_script():
    text = open(os.path.join(ROOT, "docker", "Dockerfile")).read()
    assert "docker/build_caffe.sh --cuda" in text
    script = open(os.path.join(ROOT, "docker", "build_caffe.sh")).read()
    assert "9b891540183ddc834a02b2bd81b31afae71b2153" in script
    for arch in ("80", "86", "89", "90"):
        assert arch in text
    assert "USE_NCCL := 1" in script and "WITH_PYTHON_LAYER := 1" in script
