"""Issue 24, wrong words: hints name make targets that exist, help texts say
what the download writes and what the flags do, errors name what a file is."""
import os
import re
import subprocess
import sys

import pytest

from common.errors import UserError
from net_specs.models import MODELS, TEMPLATES
from solvers.training.start import check_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")


def cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)


def make_target_exists(target):
    return subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True).returncode == 0


@pytest.mark.parametrize("name", sorted(MODELS) + sorted(TEMPLATES))
def test_missing_initial_weights_name_only_make_targets_that_exist(name, tmp_path):
    model = {**MODELS, **TEMPLATES}[name]
    missing = [str(tmp_path / f"{source}.caffemodel") for source in model.init]
    with pytest.raises(FileNotFoundError) as caught:
        check_weights(model, missing)
    message = str(caught.value)
    for target in re.findall(r"`make ([^`]+)`", message):
        assert make_target_exists(target), f"{name}: hint names `make {target}`, which fails"
    if model.init[0] == "googlenet-ilsvrc":
        assert "no download is provided" in message


def test_help_texts():
    solve = cli("solvers.solve", "--help").stdout
    assert "weights/VGG_ILSVRC_16_layers.caffemodel" in solve and "vgg16.caffemodel" not in solve
    assert re.search(r"--snapshot-every N\s+write a snapshot", solve)
    infer = cli("solvers.infer", "--help").stdout
    assert "4.5 GB" not in infer and "about 2 GB" in infer
    assert "hidden files" in infer and "EXIF orientation is ignored" in infer


def test_gpus_error_names_the_cuda_build_too(monkeypatch):
    import caffe
    from solvers.training.multigpu import train_multi_gpu
    monkeypatch.delattr(caffe, "NCCL", raising=False)       # as in the CPU build
    with pytest.raises(UserError, match="make install CUDA=1.*Docker"):
        train_multi_gpu(None, None)
