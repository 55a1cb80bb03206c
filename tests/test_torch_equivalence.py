"""Caffe and an independent PyTorch evaluation of the same FCN agree.

bench.torch_ref rebuilds the net layer by layer from the NetParameter with
the caffe.Net's own (random) weights; matching `score` outputs check Caffe's
pooling rounding, crop offsets, skip fusion and deconvolutions against torch
(and keep the speed comparison in bench/ honest). Sizes that are not
multiples of 32 exercise the ceil-rounding and the crop offsets.
torch is a bench requirement installed by `make install`: nothing is skipped.
"""
import sys

import pytest
import torch  # noqa: F401  (a missing torch must fail, not skip)

from bench import torch_ref
from tests.test_gpu_check import read_results, run

REL_TOL = 1e-4  # observed ~1e-6: fp32 summation order differs (OpenBLAS vs oneDNN)


@pytest.mark.parametrize("model,size", [
    ("voc-fcn8s", "64x64"),
    ("voc-fcn8s", "97x131"),
    ("voc-fcn-alexnet", "97x131"),      # grouped convolutions, LRN, 3x3/2 pooling
    ("voc-fcn-googlenet", "97x131"),    # Concat, padded stride-1 pooling, 63-wide upscore
    ("voc-fcn8s-atonce", "97x131"),     # Scale layers on the skips
])
def test_score_matches_torch(model, size):
    r = torch_ref.compare(model, size, seed=3)
    assert r["outputs"] == ["score"]
    assert r["scale"] > 1.0, "degenerate output: random weights produced no signal"
    assert r["max_abs_diff"] <= REL_TOL * r["scale"], r


# bench.gpu_check's PyTorch column (here: torch is needed, and this file is left
# out by path where the bench extras are not installed).
NO_CAFFE_PYTHON = """#!/bin/sh
# an interpreter with torch and numpy, but neither caffe nor protobuf
exec {python} -c '
import runpy, sys
for name in ("caffe", "google", "google.protobuf"):
    sys.modules[name] = None                       # any import of them fails
assert sys.argv[1:3] == ["-m", "bench.torch_ref"], sys.argv
sys.argv = ["bench.torch_ref"] + sys.argv[3:]
runpy.run_module("bench.torch_ref", run_name="__main__", alter_sys=True)
' "$@"
"""


def test_the_torch_column_runs_in_an_interpreter_without_caffe(tmp_path):
    """The host's PyTorch has no caffe and perhaps another protobuf: the net
    reaches it as a JSON layer list and an .npz, and its output matches
    Caffe's (torch on the CPU here; on the GPU machine it is cuda:N)."""
    python = tmp_path / "torch-python"
    python.write_text(NO_CAFFE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    out = run("--parts", "bench", "--results", str(tmp_path), "--models", "voc-fcn-alexnet",
              "--size", "48x64", "--runs", "1", "--torch-python", str(python),
              "--torch-device", "cpu")
    assert out.returncode == 1, out.stderr                  # Caffe's GPU rows need a GPU
    _, record = read_results(tmp_path / "bench.txt")
    torch_row = next(r for r in record["rows"] if r["engine"].startswith("PyTorch"))
    assert torch_row["device"] == "cpu" and torch_row["ms"] > 0, torch_row
    assert torch_row["tf32"] is False and torch_row["cudnn_benchmark"] is False
    assert torch_row["max_rel_diff_vs_caffe"] < 1e-4
    assert torch_row["status"].startswith("ok on cpu; Caffe's side needs a GPU")


def test_forward_backward_matches_caffe():
    """bench.torch_ref's fwdbwd column does training's backward: the same
    SoftmaxWithLoss (ignore 255, normalize false) and the gradient of every
    learning parameter equal to Caffe's; the frozen bilinear upscore learns
    nothing. Inputs scaled down so that no probability underflows (Caffe
    clamps log(p) at log(FLT_MIN), torch does not)."""
    import numpy as np
    proto, net = torch_ref.caffe_net("voc-fcn-alexnet", "67x91", seed=2, loss=True)
    net.blobs["data"].data[...] *= 1e-3
    net.blobs["label"].data[0, 0, :5] = 255
    tnet = torch_ref.TorchNet.from_caffe(proto, net)
    tnet.learn(proto)
    loss = tnet.train_step({k: net.blobs[k].data.copy() for k in net.inputs})
    net.forward()
    net.backward()
    assert loss == pytest.approx(float(net.blobs["loss"].data), rel=1e-5)
    assert tnet.params["upscore"][0].grad is None
    for name, blobs in net.params.items():
        if name == "upscore":
            continue
        for i, blob in enumerate(blobs):
            got, want = tnet.params[name][i].grad.numpy(), blob.diff
            assert np.abs(want).max() > 0, (name, i)
            assert np.abs(got - want).max() <= REL_TOL * np.abs(want).max(), (name, i)
