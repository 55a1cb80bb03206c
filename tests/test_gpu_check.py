"""bench.gpu_check, as far as a machine without a GPU can run it: the
comparison and its report with the CPU on both sides, GPU rows that fail
cleanly, and argument errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "bench.gpu_check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_relative_differences_find_the_worst_array():
    ref = {"score": np.array([[1.0, -4.0]]), "grad a[0]": np.array([2.0, 0.0]),
           "grad b[0]": np.array([10.0, 1.0])}
    other = {"score": np.array([[1.0, -3.996]]), "grad a[0]": np.array([2.0, 0.5]),
             "grad b[0]": np.array([10.0, 1.0])}
    diffs = gpu_check.relative_differences(ref, other)
    assert diffs["score"] == pytest.approx(0.004 / 4)
    assert diffs["grad a[0]"] == pytest.approx(0.5 / 2)
    assert gpu_check.summarize(diffs) == dict(score_rel=pytest.approx(1e-3),
                                              grad_rel=pytest.approx(0.25), grad_worst="grad a[0]")
    with pytest.raises(ValueError, match="shape"):
        gpu_check.relative_differences(ref, dict(other, score=np.zeros(3)))


def test_caffe_engine_is_forced_on_every_layer_with_a_choice():
    from bench import common
    proto = gpu_check.force_caffe_engine(common.deploy_proto("voc-fcn-alexnet", (64, 64), loss=True))
    caffe_engine = 1                                   # Engine.CAFFE in every *_param
    field = dict(Convolution="convolution_param", Pooling="pooling_param", ReLU="relu_param",
                 LRN="lrn_param", SoftmaxWithLoss="softmax_param")
    seen = set()
    for layer in proto.layer:
        if layer.type in field:
            assert getattr(layer, field[layer.type]).engine == caffe_engine, layer.name
            seen.add(layer.type)
    assert seen == set(field)                          # every kind is in FCN-AlexNet


@pytest.mark.slow
def test_compare_reports_outputs_and_gradients_cpu_against_cpu():
    out = run("--parts", "compare", "--devices", "cpu,cpu/caffe", "--models", "voc-fcn-alexnet",
              "--size", "64x64")
    assert out.returncode == 0, out.stderr
    row = next(l for l in out.stdout.splitlines() if l.startswith("| FCN-AlexNet"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    model, device, ref, score, grads, worst, nonzero, verdict = cells
    assert (device, ref, verdict) == ("cpu/caffe", "cpu", "yes")
    # the same code on the same CPU: bit-identical, and the gradients are real
    assert float(score) == 0.0 and float(grads) == 0.0
    assert worst.startswith("grad ") and int(nonzero) >= 10


def test_gpu_rows_fail_cleanly_without_a_gpu():
    """On this machine GPU mode aborts Caffe (CPU-only build, or no driver):
    the child's failure is a row of the report and exit 1, never a traceback."""
    out = run("--parts", "compare", "--devices", "cpu,gpu0", "--models", "voc-fcn-alexnet",
              "--size", "32x32")
    assert out.returncode == 1
    assert "failed: gpu0: exit" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.parametrize("args, message", [
    (["--size", "5y5"], "--size: '5y5' is not HxW"),
    (["--size", "0x5"], "--size: '0x5' must be positive"),
    (["--devices", "cpu,tpu0"], "--devices: 'tpu0' is not cpu"),
    (["--devices", "cpu"], "--devices: give a reference"),
    (["--models", "voc-fcn9s"], "--models: unknown model 'voc-fcn9s'"),
    (["--parts", "compare,speed"], "--parts: speed not in"),
    (["--tolerance", "nan"], "--tolerance: nan must be a positive number"),
    (["--runs", "0"], "--runs: 0 must be at least 1"),
    (["extra"], "unexpected argument 'extra'"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_nominal_peak_matches_the_longest_gpu_name():
    assert gpu_check.nominal_tflops("NVIDIA H100 80GB HBM3") == 66.9
    assert gpu_check.nominal_tflops("NVIDIA A100-SXM4-80GB") == 19.5
    assert gpu_check.nominal_tflops("NVIDIA A10") == 31.2
    assert gpu_check.nominal_tflops(None) is None
    assert gpu_check.nominal_tflops("Some Future GPU") is None
