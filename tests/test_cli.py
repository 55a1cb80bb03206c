"""The shared command-line layer (common.cli) as each CLI uses it: one width
parser, one set of device flags, bad values refused with one line and exit 2
before Caffe could abort or a wrong net be written."""
import argparse
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from common import cli
from common.atomic import atomic_write, write_files
from common.image import caffe_image, to_rgb
from data.layouts import write_folder
from net_specs.datasets import get_dataset
from net_specs.resolve import resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_usage_error(proc, *words):
    """Exit 2, one line naming `words`, no traceback, no Caffe abort."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert lines, proc.stderr
    assert "Traceback" not in proc.stderr and "Check failed" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


# ----------------------------------------------------------------- widths

@pytest.mark.parametrize("text,value", [("1", 1.0), ("0.5", 0.5), ("1/8", 0.125), (" 1/16 ", 0.0625)])
def test_width_accepts_numbers_and_fractions(text, value):
    assert cli.parse_width(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "1/0", "inf", "nan", "-inf", "wide", ""])
def test_width_refuses_what_is_not_a_positive_finite_number(text):
    with pytest.raises(argparse.ArgumentTypeError, match="--width"):
        cli.parse_width(text)


def test_every_cli_takes_a_fractional_width(tmp_path):
    proc = run_module("net_specs", "emit", "voc-fcn32s", "--width", "1/8", "--out", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    assert "num_output: 8" in (tmp_path / "m" / "deploy.prototxt").read_text()   # conv1_1: 64 / 8
    for module, args in (("solvers.solve", ["voc-fcn32s"]), ("solvers.score", ["voc-fcn32s", "w"]),
                         ("solvers.infer", ["voc-fcn32s", "w", "x.png"])):
        for bad in ("inf", "nan"):
            assert_usage_error(run_module(module, *args, "--width", bad), "--width")


# ----------------------------------------------------------------- numbers

def test_emit_refuses_a_mean_that_is_not_finite(tmp_path):
    proc = run_module("net_specs", "emit", "fcn8s", "--dataset", "folder", "--classes", "3",
                      "--mean", "nan,inf,1", "--out", tmp_path / "m")
    assert_usage_error(proc, "--mean")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("args,flag", [(["--iters", "-5"], "--iters"),
                                       (["--base-lr", "-1"], "--base-lr"),
                                       (["--base-lr", "nan"], "--base-lr"),
                                       (["--snapshot-every", "0"], "--snapshot-every")])
def test_solve_refuses_negative_counts_and_rates(args, flag, tmp_path):
    proc = run_module("solvers.solve", "voc-fcn32s", *args, "--out", tmp_path / "run")
    assert_usage_error(proc, flag)
    assert not (tmp_path / "run").exists()


def test_solve_refuses_resume_together_with_weights(tmp_path):
    proc = run_module("solvers.solve", "voc-fcn32s", "--weights", "a.caffemodel",
                      "--resume", "s.solverstate", "--out", tmp_path / "run")
    assert_usage_error(proc, "--resume", "--weights")


def test_a_published_model_keeps_its_dataset(tmp_path):
    proc = run_module("net_specs", "emit", "voc-fcn8s", "--dataset", "nyud", "--out", tmp_path / "m")
    assert_usage_error(proc, "voc-fcn8s", "template")
    assert not (tmp_path / "m").exists()
    model, dataset = resolve("fcn8s", "nyud")               # the template does it
    assert (model.name, dataset.name) == ("nyud-fcn8s", "nyud")
    with pytest.raises(ValueError, match="published nyud model"):
        resolve("nyud-fcn32s-hha", "voc")
    with pytest.raises(ValueError, match="no input variant 'hha'"):
        get_dataset("voc").input_variant("hha")


# ----------------------------------------------------------------- devices

CUDA_BUILD = "--cuda" in os.environ.get("CAFFE_BUILD_FLAGS", "")   # make cuda-check


def test_cpu_build_is_detected():
    assert cli.gpu_build() is CUDA_BUILD    # CPU build, or the CUDA build of make cuda-check
    assert cli.gpu_count() == 0             # no GPU on the test machines


@pytest.mark.parametrize("module,args", [("solvers.solve", ["voc-fcn32s"]),
                                         ("solvers.score", ["voc-fcn32s", "w.caffemodel"]),
                                         ("solvers.infer", ["voc-fcn32s", "w.caffemodel", "x.png"]),
                                         ("demo", ["--quick", "--out", "demo-run"])])
def test_gpu_flag_on_the_cpu_build_is_a_message_not_an_abort(module, args, tmp_path):
    data = tmp_path / "data"
    write_folder(str(data), [("a", (8, 8))], n_classes=3, split="train")
    write_folder(str(data), [("a", (8, 8))], n_classes=3, split="val")
    if module == "solvers.solve":
        args = ["fcn32s", "--dataset", "folder", "--classes", "3", "--root", data,
                "--weights", tmp_path / "w.caffemodel", "--out", tmp_path / "run"]
    proc = run_module(module, *args, "--gpu", "0", cwd=tmp_path)
    if CUDA_BUILD:      # the CUDA build on a machine without a GPU
        assert_usage_error(proc, "--gpu 0", "no such GPU", "0 usable CUDA device")
    else:
        assert_usage_error(proc, "--gpu 0", "CPU-only", "docker")


def test_negative_gpu_id_is_refused():
    assert_usage_error(run_module("solvers.score", "voc-fcn32s", "w", "--gpu", "-1"), "--gpu")


# ----------------------------------------------------------------- exit statuses

def test_user_errors_exit_2_with_one_line(capsys):
    def fail(_args):
        raise FileNotFoundError("model.caffemodel not\nfound")
    assert cli.run_cli("prog", fail, None) == 2
    assert capsys.readouterr().err == "prog: error: model.caffemodel not found\n"
    assert cli.run_cli("prog", lambda _args: 3, None) == 3
    assert cli.run_cli("prog", lambda _args: None, None) == 0


def test_unknown_model_exits_2_in_every_cli():
    for module, args in (("net_specs", ["emit", "no-such"]), ("solvers.solve", ["no-such"]),
                         ("solvers.score", ["no-such", "w"]), ("solvers.infer", ["no-such", "w", "x"])):
        assert_usage_error(run_module(module, *args), "unknown model")


# ----------------------------------------------------------------- files and images

def test_atomic_writes_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(str(tmp_path / "a.txt"), "text")
        write_files(str(tmp_path / "d"), {"b.prototxt": "x"})
        os.umask(0o077)
        atomic_write(str(tmp_path / "private.bin"), b"\x00")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "b.prototxt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "private.bin").st_mode) == 0o600


def test_16_bit_images_are_scaled_alike_in_training_and_inference(tmp_path):
    """A 16-bit grey photo: the training layer (layers.io.read_rgb, via
    Caffe) and inference (solvers.inference.predictor.load_image) see the same blob,
    values scaled by the 16-bit range rather than clipped to 255."""
    import caffe
    from caffe import layers as L
    from solvers.inference import predictor as infer

    root = tmp_path / "data"
    write_folder(str(root), [("a", (6, 5))], n_classes=3, split="train")
    grey = (np.arange(30).reshape(6, 5) * 2000).astype(np.uint16)      # 0 .. 58000
    for name in os.listdir(root / "images"):
        os.remove(root / "images" / name)
    Image.fromarray(grey).save(root / "images" / "a.png")
    assert Image.open(root / "images" / "a.png").mode == "I;16"

    n = caffe.NetSpec()
    mean = [10.0, 20.0, 30.0]
    n.data, n.label = L.Python(module="layers.folder", layer="FolderSegDataLayer", ntop=2,
                               param_str=f'{{"root": "{root}", "split": "train", "mean": {mean}, '
                                         f'"n_classes": 3, "randomize": false, "prefetch": false}}')
    path = tmp_path / "net.prototxt"
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST)
    net.forward()
    trained = net.blobs["data"].data[0]

    rgb = infer.load_image(str(root / "images" / "a.png"))
    np.testing.assert_array_equal(trained, caffe_image(rgb, mean))
    expected = np.rint(grey * 255.0 / 65535.0)
    np.testing.assert_array_equal(rgb[:, :, 0], expected)
    assert rgb.max() == round(58000 * 255 / 65535) < 255         # not clipped to white
    assert to_rgb(Image.fromarray(np.full((2, 2), 65535, np.uint16))).max() == 255
