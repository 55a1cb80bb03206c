"""The solve driver on real Caffe: resume equivalence, NaN stop, Ctrl-C
snapshot, metrics and curves, solver hyperparameters, and the demo."""
import argparse
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

from net_specs import MODELS, NetConfig
from net_specs.datasets import VOC_MEAN, Dataset, Head, Source
from solvers.training.run import Run, data_layer
from solvers.training.cli import main as solve_main
from netio.nets import save_weights
from data.layouts import write_folder, write_voc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 1 / 16
N_CLASSES = 4


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc") / "VOC2011")
    write_voc(root, [(f"t{i}", (37 + 4 * i, 45 - 2 * i)) for i in range(5)], n_classes=N_CLASSES,
              seed=1, split="train")
    write_voc(root, [(f"v{i}", (41, 33 + 3 * i)) for i in range(3)], n_classes=N_CLASSES,
              seed=2, split="val")
    return root


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("folder"))
    write_folder(folder, [(f"t{i}", (35, 39 + i)) for i in range(4)], n_classes=N_CLASSES, split="train")
    write_folder(folder, [("v0", (33, 41))], n_classes=N_CLASSES, split="val")
    return folder


def toy_dataset(root):
    voc = "layers.voc.VOCSegDataLayer"
    return Dataset("toy", "tiny VOC-layout fixture", VOC_MEAN, (Head("label", N_CLASSES),),
                   train=Source(voc, root, "train"), val=Source(voc, root, "val"))


def make_run(root, out, lr=1e-7, snapshot_every=1000, model="fcn8s", prefetch=True, workers=None,
             solver=None):
    net = NetConfig.of(model, dataset=toy_dataset(root), width=WIDTH, prefetch=prefetch,
                       workers=workers)
    run = Run.open(net, out_dir=str(out), solver_overrides=dict(base_lr=lr, **(solver or {})),
                   snapshot_every=snapshot_every)
    rng = np.random.RandomState(0)
    for blobs in run.solver.net.params.values():
        blobs[0].data[...] = rng.randn(*blobs[0].data.shape) * 0.05
    run.bilinear()
    return run


def quiet(_msg):
    pass


@pytest.mark.parametrize("solver, lr, cls", [
    ({}, 1e-7, caffe.SGDSolver),
    (dict(type="Adam", momentum=0.9, momentum2=0.999), 1e-4, caffe.AdamSolver),  # the demo's solver
])
def test_resume_continues_with_identical_losses(toy_root, tmp_path, solver, lr, cls):
    """Resuming replays the same losses, for SGD (one history blob per
    parameter) and Adam (two: its state must round-trip too)."""
    a = make_run(toy_root, tmp_path / "a", lr=lr, snapshot_every=3, solver=solver)
    assert type(a.solver) is cls                       # the solver the `type` field names
    a.train(6, display=1, log=quiet)
    losses_a = [loss for _, loss in a.history]
    state = tmp_path / "a" / "snapshots" / "train_iter_3.solverstate"
    assert state.exists()

    b = make_run(toy_root, tmp_path / "b", lr=lr, solver=solver)
    b.resume(str(state))
    assert b.solver.iter == 3
    assert data_layer(b.solver.net).stream.pids          # resumed on the loader processes
    b.train(3, display=1, log=quiet)
    losses_b = [loss for _, loss in b.history]
    assert [it for it, _ in b.history] == [4, 5, 6]
    assert losses_b == losses_a[3:]
    assert len(set(losses_a)) > 1                      # the losses do change


def test_prefetch_does_not_change_training(toy_root, tmp_path):
    loader = make_run(toy_root, tmp_path / "loader", prefetch=True)       # default: loader processes
    thread = make_run(toy_root, tmp_path / "thread", prefetch=True, workers=0)
    off = make_run(toy_root, tmp_path / "off", prefetch=False)
    assert data_layer(loader.solver.net).stream.pids
    for run in (loader, thread, off):
        run.train(4, display=1, log=quiet)
    assert loader.history == thread.history == off.history


def test_nan_loss_stops_and_keeps_last_good_snapshot(toy_root, folder_root, tmp_path):
    """In a subprocess: a NaN step can corrupt Caffe's heap (max pooling
    backward on all-NaN windows), so the CLI reports and exits hard."""
    init = make_run(toy_root, tmp_path / "init")
    weights = str(tmp_path / "init.caffemodel")
    save_weights(init.solver.net, weights)
    out = tmp_path / "nan"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "solvers.solve", "fcn8s", "--dataset", "folder", "--classes",
         str(N_CLASSES), "--root", folder_root, "--width", str(WIDTH), "--weights", weights,
         "--out", str(out), "--base-lr", "1e6", "--snapshot-every", "1", "--iters", "50",
         "--cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "loss is nan" in proc.stderr or "loss is inf" in proc.stderr
    snaps = sorted(os.listdir(out / "snapshots"))
    assert snaps, "the good iterations before the NaN keep their snapshots"
    last = max((f for f in snaps if f.endswith(".caffemodel")),
               key=lambda f: int(f.split("_iter_")[1].split(".")[0]))
    net = caffe.Net(str(out / "deploy.prototxt"), str(out / "snapshots" / last), caffe.TEST)
    assert all(np.isfinite(b.data).all() for blobs in net.params.values() for b in blobs)


def test_interrupt_writes_a_snapshot(toy_root, tmp_path):
    run = make_run(toy_root, tmp_path / "int")
    before = signal.getsignal(signal.SIGINT)   # SIG_IGN where started in the background

    def interrupt_at_two(msg):
        if "(2/" in msg:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run.train(10, display=1, log=interrupt_at_two)
    assert run.solver.iter == 2
    assert (tmp_path / "int" / "snapshots" / "train_iter_2.solverstate").exists()
    assert (tmp_path / "int" / "snapshots" / "train_iter_2.caffemodel").exists()
    assert signal.getsignal(signal.SIGINT) is before     # the caller's handler is back


def test_metrics_curves_and_final_weights(toy_root, tmp_path):
    run = make_run(toy_root, tmp_path / "m")
    final = run.train(4, score_every=2, display=2, log=quiet)
    lines = [json.loads(l) for l in open(tmp_path / "m" / "metrics.jsonl")]
    assert [l["iteration"] for l in lines] == [2, 4]
    for line in lines:
        for key in ("loss", "pixel_acc", "mean_acc", "mean_iu", "fw_iu", "per_class_iu"):
            assert key in line
        assert len(line["per_class_iu"]) == N_CLASSES
        assert 0 <= line["pixel_acc"] <= 1
    assert open(tmp_path / "m" / "curves.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.isfile(final)
    solver = caffe_pb2.SolverParameter()
    text_format.Merge(open(run.solver_path).read(), solver)
    assert solver.test_iter == [3] and solver.test_interval > 10 ** 8


@pytest.mark.parametrize("name, lr, momentum, iter_size", [
    ("voc-fcn32s", 1e-10, 0.99, 1), ("voc-fcn16s", 1e-12, 0.99, 1), ("voc-fcn8s", 1e-14, 0.99, 1),
    ("voc-fcn8s-atonce", 1e-10, 0.99, 1), ("voc-fcn-alexnet", 1e-4, 0.9, 20),
    ("siftflow-fcn16s", 1e-12, 0.99, 1), ("siftflow-fcn8s", 1e-12, 0.99, 1),
    ("pascalcontext-fcn8s", 1e-14, 0.99, 1), ("nyud-fcn32s-color-hha", 1e-12, 0.99, 1),
])
def test_solver_hyperparameters_are_the_papers(name, lr, momentum, iter_size):
    from solvers.training.config import solver_param
    p = solver_param(MODELS[name], "train.prototxt", "val.prototxt", "snap", 736)
    assert p.base_lr == pytest.approx(lr, rel=1e-6)          # float32 fields
    assert p.momentum == pytest.approx(momentum, rel=1e-6) and p.iter_size == iter_size
    assert p.lr_policy == "fixed" and p.weight_decay == pytest.approx(0.0005, rel=1e-6)
    assert p.test_iter == [736] and p.test_interval >= 10 ** 8 and not p.test_initialization


def test_init_transplants_and_sets_bilinear(toy_root, tmp_path):
    """A previous stage's caffemodel initialises the next by layer name."""
    first = make_run(toy_root, tmp_path / "s32", model="fcn32s")
    weights = first.train(1, display=1, log=quiet)
    second = Run.open(NetConfig.of("fcn16s", dataset=toy_dataset(toy_root), width=WIDTH),
                      out_dir=str(tmp_path / "s16"))
    second.init_from([weights])
    src = caffe.Net(first.paths["deploy"], weights, caffe.TEST)
    for name in ("conv1_1", "fc6", "score_fr"):
        assert np.array_equal(second.solver.net.params[name][0].data, src.params[name][0].data)
    up = second.solver.net.params["upscore16"][0].data
    assert up[0, 0].max() > 0 and up[0, 1].max() == 0       # per-channel bilinear


def test_cli_reports_missing_data_and_weights(tmp_path):
    assert solve_main(["voc-fcn32s", "--weights", "nope.caffemodel", "--out", str(tmp_path / "x"),
                       "--root", str(tmp_path / "missing")]) == 2


def test_missing_weights_name_the_make_target(folder_root, tmp_path, capsys):
    code = solve_main(["fcn32s", "--dataset", "folder", "--classes", str(N_CLASSES), "--root", folder_root,
                       "--weights", str(tmp_path / "none.caffemodel"), "--out", str(tmp_path / "o"),
                       "--width", "0.0625", "--iters", "1"])
    assert code == 2
    assert "make weights-vgg16" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "demo", "--quick", "--out", str(tmp_path / "demo")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.load(open(tmp_path / "demo" / "results.json"))
    assert set(results["stages"]) == {"fcn32s", "fcn16s", "fcn8s"}
    assert 0 < results["chance_mean_iu"] < 1
    assert results["seed"] == 1337
    assert set(results["seconds"]) == {"classifier", "fcn32s", "fcn16s", "fcn8s", "predictions", "total"}
    assert results["seconds"]["total"] >= sum(results["seconds"][s] for s in ("classifier", "fcn8s"))
    for stage in ("fcn32s", "fcn16s", "fcn8s"):
        assert (tmp_path / "demo" / stage / "final.caffemodel").exists()
        assert (tmp_path / "demo" / stage / "curves.png").exists()
    assert (tmp_path / "demo" / "predictions.png").exists()
    assert (tmp_path / "demo" / "report" / "report.html").exists()
    assert (tmp_path / "demo" / "report" / "label-best-1.png").exists()
    report = json.load(open(tmp_path / "demo" / "report" / "scores.json"))
    assert report["heads"]["label"]["mean_iu"] == pytest.approx(results["stages"]["fcn8s"]["mean_iu"])
    assert "chance" in out.stdout and "fcn8s" in out.stdout


# ------------------------------------------- multi-GPU: iterations after --resume

def write_solverstate(path, iteration):
    state = caffe_pb2.SolverState(iter=iteration, learned_net="w.caffemodel")
    path.write_bytes(state.SerializeToString())
    return str(path)


def test_multigpu_resume_runs_what_is_left_of_max_iter(tmp_path):
    """Every rank steps max_iter - (the state's iteration), as single-GPU
    solve does; before, each rank stepped the whole max_iter again."""
    from solvers.training.multigpu import MultiGpuConfig, iterations_for, parse_gpus
    model = MODELS["voc-fcn32s"]                                  # max_iter 100000
    state = write_solverstate(tmp_path / "train_iter_4000.solverstate", 4000)
    resumed = MultiGpuConfig(gpus=(0, 1), out=str(tmp_path), resume=state)
    assert iterations_for(resumed, model) == 100000 - 4000
    assert iterations_for(MultiGpuConfig(gpus=(0, 1), out=str(tmp_path)), model) == 100000
    assert iterations_for(MultiGpuConfig(gpus=(0,), out="o", resume=state, iters=7), model) == 7
    done = write_solverstate(tmp_path / "late.solverstate", 200000)
    assert iterations_for(MultiGpuConfig(gpus=(0,), out="o", resume=done), model) == 0
    assert parse_gpus("0, 2") == [0, 2]
    with pytest.raises(ValueError, match="--gpus"):
        parse_gpus("0,x")
    with pytest.raises(ValueError, match="twice"):
        parse_gpus("1,1")


def test_multigpu_on_a_machine_without_those_gpus_is_one_line_exit_2(tmp_path):
    """CPU build: no NCCL; CUDA build without GPUs (make cuda-check): no such
    GPU. Either way one line before any worker starts, not an abort in each."""
    proc = subprocess.run([sys.executable, "-m", "solvers.solve", "voc-fcn32s", "--gpus", "0,1",
                           "--out", str(tmp_path / "run"), "--weights", str(tmp_path / "w")],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2"))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("solvers.solve: error: --gpus")
    assert "NCCL" in line or "usable CUDA device" in line


def test_bad_gpus_is_an_input_error_of_multigpu_itself(tmp_path, capsys):
    """multigpu's parser raises InputError (solve no longer rewraps a plain
    ValueError); through the CLI a bad --gpus is one line naming it, exit 2."""
    from common.errors import InputError
    from solvers.training.multigpu import parse_gpus
    for bad, words in (("0,x", "must list GPU ids"), ("-1", "must list GPU ids"), ("1,1", "twice")):
        with pytest.raises(InputError, match=words):
            parse_gpus(bad)
    out = tmp_path / "run"
    assert solve_main(["voc-fcn32s", "--gpus", "0,x", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "solvers.solve: error: --gpus must list GPU ids like 0,1, got '0,x'"
    assert not out.exists()


def test_multigpu_config_takes_only_what_workers_need(tmp_path):
    from solvers.training.multigpu import MultiGpuConfig
    args = argparse.Namespace(gpus="0,1", out=None, width=0.5, root="r", weights=["a", "b"],
                              resume=None, iters=3, score_every=2, snapshot_every=5, base_lr=1e-3,
                              workers=2, queue_depth=3)
    config = MultiGpuConfig.from_args(args, "voc-fcn8s")
    assert config == MultiGpuConfig(gpus=(0, 1), out=os.path.join("runs", "voc-fcn8s"),
                                    weights=("a", "b"), iters=3, score_every=2,
                                    snapshot_every=5, base_lr=1e-3)


def test_resumed_single_gpu_run_steps_the_same_count(tmp_path):
    """The arithmetic multigpu now shares with solve, on a real resumed solver."""
    from solvers.training.run import remaining_iterations, solverstate_iter
    root = str(tmp_path / "data")
    write_voc(root, [("a", (20, 24)), ("b", (18, 16))], n_classes=N_CLASSES, split="train")
    write_voc(root, [("a", (20, 24))], n_classes=N_CLASSES, split="val")
    run = make_run(root, tmp_path / "run", snapshot_every=2, prefetch=False)
    run.solver.step(2)
    run.solver.snapshot()
    state = str(tmp_path / "run" / "snapshots" / "train_iter_2.solverstate")
    assert solverstate_iter(state) == 2
    again = make_run(root, tmp_path / "run2", prefetch=False)
    again.resume(state)
    assert again.solver.iter == 2
    assert remaining_iterations(None, 10, again.solver.iter) == 8
    assert remaining_iterations(3, 10, again.solver.iter) == 3
