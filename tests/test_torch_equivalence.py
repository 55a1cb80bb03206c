"""Caffe and an independent PyTorch evaluation of the same FCN agree.

bench.torch_ref rebuilds the net layer by layer from the NetParameter with
the caffe.Net's own (random) weights; matching `score` outputs check Caffe's
pooling rounding, crop offsets, skip fusion and deconvolutions against torch
(and keep the speed comparison in bench/ honest). Sizes that are not
multiples of 32 exercise the ceil-rounding and the crop offsets.
torch is a bench requirement installed by `make install`: nothing is skipped.
"""
import pytest
import torch  # noqa: F401  (a missing torch must fail, not skip)

from bench import torch_ref

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
