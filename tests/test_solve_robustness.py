"""Issue 12, solve and infer: bad or copied .solverstate files, a failed
solve into an existing run, failures mid-run and at the final scoring,
metrics.jsonl across re-runs, and infer --out among its inputs -- on real
Caffe with the narrow nets and tiny fixtures of tests/test_solve.py."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import caffe

from data.layouts import write_folder
from net_specs import NetConfig
from solvers.inference import cli as infer
from solvers.training.run import RunError, Run, check_solverstate, read_metrics
from solvers.training.cli import main as solve_main
from tests import seg_fixtures
from tests.test_solve import N_CLASSES, WIDTH, make_run, quiet, toy_dataset
from tests.test_solve import folder_root, toy_root as voc_root  # noqa: F401  (fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def states(voc_root, tmp_path_factory):
    """Snapshots at iteration 2 of narrow fcn8s and fcn32s runs, and fcn32s weights."""
    base = tmp_path_factory.mktemp("states")
    out = {}
    for model in ("fcn8s", "fcn32s"):
        run = make_run(voc_root, base / model, snapshot_every=2, model=model, prefetch=False)
        run.train(2, display=1, log=quiet)
        out[model] = str(base / model / "snapshots" / "train_iter_2.solverstate")
    out["fcn32s-weights"] = str(base / "fcn32s" / "final.caffemodel")
    return out


def solve_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-m", "solvers.solve", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def folder_args(folder_root, out, model="fcn8s"):
    return [model, "--dataset", "folder", "--classes", str(N_CLASSES), "--root", folder_root,
            "--width", str(WIDTH), "--out", str(out), "--cpu"]


def tree_bytes(directory):
    """{relative path: bytes} of every file under `directory`."""
    files = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            files[os.path.relpath(path, directory)] = open(path, "rb").read()
    return files


# ------------------------------------------------ 1. unusable .solverstate files

@pytest.mark.parametrize("case, expected", [
    ("empty", "names no weights"),
    ("truncated", "truncated or corrupt"),
    ("random", ".solverstate"),
    ("other-model", "history blobs"),
])
def test_resume_from_an_unusable_state_exits_2_naming_it(case, expected, states, folder_root, tmp_path):
    """Before: Caffe's `Check failed: state.history_size() == history_.size()`, exit 134."""
    bad = tmp_path / f"{case}.solverstate"
    good = open(states["fcn8s"], "rb").read()
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "truncated":
        bad.write_bytes(good[:len(good) // 2])
    elif case == "random":
        bad.write_bytes(np.random.RandomState(0).bytes(5000))
    else:
        bad = states["fcn32s"]                      # fcn32s's state resumed into fcn8s
    proc = solve_cli(*folder_args(folder_root, tmp_path / "out"), "--resume", bad, "--iters", "1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("solvers.solve: error: --resume:")
    assert str(bad) in lines[0] and expected in lines[0]
    assert "Check failed" not in proc.stderr


def test_state_of_another_width_or_with_foreign_weights_is_refused(states, voc_root, tmp_path):
    wider = Run.open(NetConfig.of("fcn8s", dataset=toy_dataset(voc_root), width=2 * WIDTH),
                     out_dir=str(tmp_path / "wide"))
    with pytest.raises(RunError, match="expected .*another model or width"):
        check_solverstate(states["fcn8s"], wider.solver.net, "fcn8s")
    # the fcn8s state beside a caffemodel of fcn32s under its learned_net's name
    copy = tmp_path / "mixed"
    copy.mkdir()
    shutil.copy(states["fcn8s"], copy / "train_iter_2.solverstate")
    shutil.copy(states["fcn32s-weights"], copy / "train_iter_2.caffemodel")
    run = make_run(voc_root, tmp_path / "r", prefetch=False)
    with pytest.raises(RunError, match="score_pool4"):
        run.resume(str(copy / "train_iter_2.solverstate"))


# ------------------------------------------------ 2. a copied run directory

def test_resume_from_a_copied_run_uses_the_copy_weights(voc_root, tmp_path):
    a = make_run(voc_root, tmp_path / "a", snapshot_every=2, prefetch=False)
    a.train(2, display=1, log=quiet)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a.train(2, display=1, log=quiet)                    # a moves on ...
    snaps = tmp_path / "a" / "snapshots"
    shutil.copy(snaps / "train_iter_4.caffemodel", snaps / "train_iter_2.caffemodel")  # ... and changes
    copied = caffe.Net(str(tmp_path / "b" / "deploy.prototxt"),
                       str(tmp_path / "b" / "snapshots" / "train_iter_2.caffemodel"), caffe.TEST)
    changed = caffe.Net(str(tmp_path / "a" / "deploy.prototxt"),
                        str(snaps / "train_iter_2.caffemodel"), caffe.TEST)
    assert not np.array_equal(copied.params["fc6"][0].data, changed.params["fc6"][0].data)

    state = str(tmp_path / "b" / "snapshots" / "train_iter_2.solverstate")
    resumed = make_run(voc_root, tmp_path / "c", prefetch=False)
    resumed.resume(state)
    for name, blobs in copied.params.items():
        for j, blob in enumerate(blobs):
            assert np.array_equal(resumed.solver.net.params[name][j].data, blob.data), name

    shutil.rmtree(tmp_path / "a")                       # the original gone altogether
    again = make_run(voc_root, tmp_path / "d", prefetch=False)
    again.resume(state)
    assert again.solver.iter == 2
    assert np.array_equal(again.solver.net.params["fc6"][0].data, copied.params["fc6"][0].data)


def test_resume_with_the_weights_nowhere_names_both_places(states, voc_root, tmp_path):
    lone = tmp_path / "lone.solverstate"
    shutil.copy(states["fcn8s"], lone)
    moved = states["fcn8s"].replace(".solverstate", ".caffemodel")
    os.rename(moved, moved + ".away")
    try:
        run = make_run(voc_root, tmp_path / "r", prefetch=False)
        with pytest.raises(RunError, match="weights of .*lone.solverstate.* are missing"):
            run.resume(str(lone))
    finally:
        os.rename(moved + ".away", moved)


# ------------------------------------------------ 3. a failed solve keeps an existing run

def test_failed_solve_leaves_an_existing_run_byte_identical(states, folder_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = folder_args(folder_root, out, model="fcn32s")
    assert solve_main(args + ["--weights", states["fcn32s-weights"], "--iters", "2",
                              "--score-every", "1"]) == 0
    before = tree_bytes(out)
    assert {"train.prototxt", "val.prototxt", "deploy.prototxt", "solver.prototxt",
            "metrics.jsonl", "final.caffemodel"} <= set(before)
    capsys.readouterr()
    # other settings (wider nets, another learning rate), then a state that is not there
    wider = [a if a != str(WIDTH) else str(2 * WIDTH) for a in args]
    code = solve_main(wider + ["--base-lr", "0.001", "--resume", str(tmp_path / "absent.solverstate")])
    assert code == 2 and "absent.solverstate" in capsys.readouterr().err
    assert tree_bytes(out) == before
    assert not [f for f in os.listdir(out) if f.startswith(".staging")]


# ------------------------------------------------ 4. failures late in a run keep the weights

def test_bad_val_image_at_final_scoring_keeps_the_weights(states, tmp_path, capsys):
    root = str(tmp_path / "data")
    write_folder(root, [(f"t{i}", (35, 39 + i)) for i in range(3)], n_classes=N_CLASSES, split="train")
    write_folder(root, [("v0", (33, 41)), ("v1", (30, 36))], n_classes=N_CLASSES, split="val")
    # the second val image is decoded only when the val split is scored (labels are
    # checked when the net is built, images only by their headers): one cut after
    # its header fails there
    v1 = os.path.join(root, "images", "v1.png")
    data = open(v1, "rb").read()
    with open(v1, "wb") as f:
        f.write(data[:60])
    out = tmp_path / "run"
    code = solve_main(folder_args(root, out, model="fcn32s")
                      + ["--weights", states["fcn32s-weights"], "--iters", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "final scoring failed" in err[0] and "v1.png" in err[0] and "final.caffemodel" in err[0]
    assert (out / "final.caffemodel").exists()
    assert (out / "snapshots" / "train_iter_3.solverstate").exists()
    assert (out / "snapshots" / "train_iter_3.caffemodel").exists()


def test_bad_training_image_mid_run_snapshots_the_last_good_state(voc_root, tmp_path):
    root = str(tmp_path / "VOC2011")
    shutil.copytree(voc_root, root)                     # this test spoils the images
    run = make_run(root, tmp_path / "run", snapshot_every=1000)
    run.train(2, display=1, log=quiet)
    for name in os.listdir(os.path.join(root, "JPEGImages")):    # every training image goes bad
        with open(os.path.join(root, "JPEGImages", name), "wb") as f:
            f.write(b"\xff\xd8 not a jpeg")
    with pytest.raises(RunError) as caught:
        run.train(5, display=1, log=quiet)
    stopped = run.solver.iter
    assert stopped >= 2
    state = tmp_path / "run" / "snapshots" / f"train_iter_{stopped}.solverstate"
    message = str(caught.value)
    assert "unreadable or truncated image" in message and str(state) in message
    assert state.exists()
    saved = caffe.Net(run.paths["deploy"], str(state).replace(".solverstate", ".caffemodel"), caffe.TEST)
    for name in ("conv1_1", "fc7", "score_fr"):
        assert np.array_equal(saved.params[name][0].data, run.solver.net.params[name][0].data)


# ------------------------------------------------ 5. metrics.jsonl across re-runs

def test_fresh_rerun_sets_old_metrics_aside_and_resume_trims_them(voc_root, tmp_path):
    out = tmp_path / "run"
    first = make_run(voc_root, out, snapshot_every=2, prefetch=False)
    first.train(4, score_every=1, display=1, log=quiet)
    assert [m["iteration"] for m in read_metrics(str(out / "metrics.jsonl"))] == [1, 2, 3, 4]
    old = (out / "metrics.jsonl").read_bytes()

    resumed = make_run(voc_root, out, snapshot_every=2, prefetch=False)
    resumed.resume(str(out / "snapshots" / "train_iter_2.solverstate"))
    resumed.train(1, display=1, log=quiet)
    assert [m["iteration"] for m in read_metrics(str(out / "metrics.jsonl"))] == [1, 2, 3]
    assert not (out / "metrics.jsonl.1").exists()

    fresh = make_run(voc_root, out, prefetch=False)
    fresh.train(1, display=1, log=quiet)
    assert [m["iteration"] for m in read_metrics(str(out / "metrics.jsonl"))] == [1]
    assert [m["iteration"] for m in read_metrics(str(out / "metrics.jsonl.1"))] == [1, 2, 3]
    again = make_run(voc_root, out, prefetch=False)
    again.train(2, display=1, log=quiet)
    assert [m["iteration"] for m in read_metrics(str(out / "metrics.jsonl.2"))] == [1]
    assert [m["iteration"] for m in read_metrics(str(out / "metrics.jsonl"))] == [2]
    assert old != (out / "metrics.jsonl.1").read_bytes()     # the resume rewrote its own lines


# ------------------------------------------------ 6. infer --out among the inputs

@pytest.fixture(scope="module")
def voc_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "voc-fcn32s-narrow.caffemodel"
    seg_fixtures.make_weights("voc-fcn32s", path, {"score_fr": {0: 1, 1: 18, 2: 15}})
    return str(path)


def test_infer_refuses_an_out_that_would_overwrite_inputs(voc_weights, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((24, 32, 3), 200, np.uint8)).save(photos / "a.png")
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(photos / "b.jpg")
    before = tree_bytes(photos)
    common = ["voc-fcn32s", voc_weights, "--width", "1/16", "--cpu"]
    for inputs, out in (([photos], photos), ([photos / "a.png"], photos),
                        ([photos / "a.png"], str(photos) + "/./")):
        code = infer.main(common[:2] + [str(p) for p in inputs] + ["--out", str(out)] + common[2:])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("solvers.infer: error: --out")
        assert tree_bytes(photos) == before
    # a JPEG input cannot be overwritten by the PNG outputs beside it
    code = infer.main(common[:2] + [str(photos / "b.jpg"), "--out", str(photos)] + common[2:])
    assert code == 0
    assert (photos / "b.png").exists() and (photos / "b.jpg").read_bytes() == before["b.jpg"]
