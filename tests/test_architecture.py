"""Issue 25's small defects, each pinned: records instead of side tables,
one home per constant, user errors told apart from bugs."""
import argparse
import ast
import os
import re
from dataclasses import replace

import pytest

from common.cli import USER_ERRORS, argparse_type, check_classes, parse_mean, run_cli
from common.errors import InputError, UserError
from net_specs import build, get_model
from net_specs.models import MODEL_LIST, TEMPLATES, index_by_name
from net_specs.registry import check_unique, lookup
from net_specs.trunks import TRUNKS, get_trunk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("common", "netio", "net_specs", "layers", "data", "surgery", "solvers", "demo", "bench")


def source_files(packages=PACKAGES):
    for package in packages:
        for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.relpath(os.path.join(dirpath, name), ROOT)


def constants(path):
    """Every literal (number or string, docstrings left out) of a module."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and id(node) not in docstrings]


# ------------------------------------------------------------------ trunks

def test_an_unknown_trunk_is_named_not_a_key_error():
    """build() looked the FCN-32s kernel up before its unknown-trunk check."""
    model = replace(get_model("voc-fcn32s"), trunk="resnet")
    with pytest.raises(InputError, match="unknown trunk 'resnet'; known: vgg16, alexnet, googlenet"):
        build(model, "deploy")


def test_trunks_are_records_with_their_kernel_and_skips():
    assert [(t.name, t.upscore32_kernel, t.skips) for t in TRUNKS.values()] == [
        ("vgg16", 64, ("pool4", "pool3")), ("alexnet", 63, ()), ("googlenet", 63, ())]
    assert get_trunk("vgg16").build is TRUNKS["vgg16"].build
    for name in ("voc-fcn32s", "voc-fcn-alexnet", "voc-fcn-googlenet"):
        model = get_model(name)
        proto = build(model, "deploy", width=1 / 16)
        upscore = [l for l in proto.layer if l.type == "Deconvolution"]
        assert [l.convolution_param.kernel_size[0] for l in upscore] == \
            [get_trunk(model.trunk).upscore32_kernel]
    with pytest.raises(InputError, match="no skip layers"):
        build(replace(get_model("voc-fcn8s"), trunk="alexnet"), "deploy")


# ------------------------------------------------------------------ names

def test_two_models_of_one_name_are_refused():
    twin = replace(MODEL_LIST[0], description="a second record")
    with pytest.raises(ValueError, match="two models are named 'voc-fcn32s'"):
        index_by_name([MODEL_LIST[0], twin])
    assert list(index_by_name(MODEL_LIST)) == [m.name for m in MODEL_LIST]


def test_one_lookup_for_models_templates_and_classifiers():
    assert lookup("voc-fcn8s") == ("model", get_model("voc-fcn8s"))
    assert lookup("fcn8s") == ("template", TEMPLATES["fcn8s"])
    assert lookup("vgg16-ilsvrc")[0] == "classifier"
    with pytest.raises(InputError, match="unknown model 'nope'; known: .*fcn8s.*vgg16-ilsvrc"):
        lookup("nope")
    with pytest.raises(ValueError, match="'fcn8s' is both a model and a template"):
        check_unique((("model", {"fcn8s": 1}), ("template", {"fcn8s": 2})))


# ------------------------------------------------------------------ flags

@pytest.mark.parametrize("value", ["0", "-1", "x", 0, 2.5, True, None])
def test_classes_is_checked_in_one_place(value):
    with pytest.raises(InputError, match="--classes must be a positive integer"):
        check_classes(value)
    if isinstance(value, str):
        with pytest.raises(argparse.ArgumentTypeError, match="--classes"):
            argparse_type(check_classes)(value)


def test_mean_is_checked_in_one_place():
    assert parse_mean("104,117,123") == parse_mean((104, 117, 123)) == (104.0, 117.0, 123.0)
    for bad in ("1,2", "a,b,c", (1, 2), (1, 2, float("nan"))):
        with pytest.raises(InputError, match="--mean must be three finite"):
            parse_mean(bad)


def test_the_dataset_records_use_the_one_check():
    from net_specs.datasets import custom_dataset, get_dataset
    with pytest.raises(InputError, match="--classes must be a positive integer, got 0"):
        get_dataset("voc").with_classes(0)
    with pytest.raises(InputError, match="--mean must be three finite"):
        custom_dataset(3, (1, 2))


# ------------------------------------------------------------------ the net record

def test_flags_become_one_netconfig_that_every_builder_reads():
    """resolve_args turns the model flags (and solve's loader flags) into one
    NetConfig; build reads width, root and loading from it alone, and a
    per-run change (a rank's seed) is a dataclasses.replace of it."""
    import dataclasses
    import json
    from net_specs import NetConfig
    from net_specs.build import data_param_str
    from net_specs.resolve import resolve_args
    args = argparse.Namespace(model="fcn8s", dataset="folder", classes=4, mean="1,2,3",
                              class_names=None, root="/data/x", width=0.25, workers=2, queue_depth=3)
    net = resolve_args(args)
    assert (net.name, net.dataset.n_classes, net.dataset.mean) == ("folder-fcn8s", 4, (1.0, 2.0, 3.0))
    assert (net.width, net.root, net.workers, net.queue_depth) == (0.25, "/data/x", 2, 3)
    assert str(build(net, "train")) == str(build(net.model, "train", dataset=net.dataset, root="/data/x",
                                                 width=0.25, workers=2, queue_depth=3))
    assert "num_output: 16" in str(build(net, "deploy"))           # conv1_1 at width 1/4
    params = json.loads(data_param_str(net, "train"))
    assert (params["root"], params["workers"], params["queue_depth"], params["seed"]) == ("/data/x", 2, 3, 1337)
    rank1 = dataclasses.replace(net, seed=net.seed + 1)
    assert json.loads(data_param_str(rank1, "train"))["seed"] == 1338
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.width = 1.0
    own = NetConfig.of("voc-fcn8s")
    assert own.dataset.name == "voc" and own.width == 1.0 and NetConfig.of(own, width=0.5).width == 0.5


# ------------------------------------------------------------------ errors

def test_a_plain_value_error_is_a_bug_with_its_traceback():
    """Only our own errors (and a missing file) are reported as one line."""
    assert ValueError not in USER_ERRORS and UserError in USER_ERRORS

    def bug(_):
        raise ValueError("an index went wrong")
    with pytest.raises(ValueError, match="an index went wrong"):
        run_cli("prog", bug, None)

    def bad_flag(_):
        raise InputError("--thing must be positive")
    assert run_cli("prog", bad_flag, None) == 2
    assert isinstance(InputError("x"), ValueError)     # callers catching ValueError still do


# ------------------------------------------------------------------ one home each

def test_the_seed_is_written_once():
    """SEED lives in common/seed.py; every default seed reads it."""
    holders = [path for path in source_files() if 1337 in constants(path)]
    assert holders == [os.path.join("common", "seed.py")]


def test_caffe_log_level_is_set_in_one_place():
    holders = [path for path in source_files() if "GLOG_minloglevel" in constants(path)]
    assert holders == [os.path.join("common", "caffe_log.py")]


def test_the_demo_schedule_carries_no_tuning_diary():
    """The 29-line account with commit hashes lives in docs/demo.md."""
    with open(os.path.join(ROOT, "demo", "__main__.py")) as f:
        lines = f.read().split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("SCHEDULE = {"))
    comment = []
    for line in reversed(lines[:at]):
        if not line.startswith("#"):
            break
        comment.append(line)
    assert 0 < len(comment) <= 4 and not re.search(r"\b[0-9a-f]{7}\b", " ".join(comment))
    with open(os.path.join(ROOT, "docs", "demo.md")) as f:
        account = f.read()
    assert "## The schedule" in account and "75bcbfe" in account and "7e31c8d" in account
