"""Issue 24, solve: SIGTERM as Ctrl-C, one run per run directory, only
finite snapshots called good, Caffe's snapshots never on a full disk --
real Caffe, the narrow nets and tiny fixtures of tests/test_solve.py."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common import outputs
from solvers.training.loop import file_weights_finite
from solvers.training.run import RunError
from netio.nets import save_weights
from tests.test_solve import N_CLASSES, WIDTH, make_run, quiet
from tests.test_solve import folder_root, toy_root  # noqa: F401  (fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="2", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def init_weights(toy_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("init")
    run = make_run(toy_root, base / "run")
    path = str(base / "init.caffemodel")
    save_weights(run.solver.net, path)
    return path


GLOG_LINE = re.compile(r"^([IWEF]\d{8} |WARNING: Logging before InitGoogleLogging)")


def our_lines(text):
    """stderr's lines less Caffe's own glog lines (the CUDA build in CPU mode
    logs "Curand not available" once when the seed is set)."""
    return [line for line in text.strip().splitlines() if not GLOG_LINE.match(line)]

def solve_args(folder_root, weights, out, *extra, start="--weights"):
    return [sys.executable, "-m", "solvers.solve", "fcn8s", "--dataset", "folder", "--classes",
            str(N_CLASSES), "--root", folder_root, "--width", str(WIDTH), start, weights,
            "--out", str(out), "--cpu", *map(str, extra)]


def start(args, tmp_path, name):
    out, err = open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w")
    return subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=out, stderr=err), \
        tmp_path / f"{name}.out", tmp_path / f"{name}.err"


def wait_for(predicate, timeout=120, step=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_sigterm_mid_run_snapshots_and_says_how_to_resume(folder_root, init_weights, tmp_path):
    out = tmp_path / "run"
    proc, stdout, stderr = start(solve_args(folder_root, init_weights, out, "--iters", "100000",
                                            "--score-every", "0"), tmp_path, "a")
    assert wait_for(lambda: "iter 20 " in stdout.read_text() or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 143, stderr.read_text()[-2000:]
    lines = our_lines(stderr.read_text())
    assert len(lines) == 1 and "terminated by SIGTERM at iteration" in lines[0], lines
    state = lines[0].rsplit("--resume ", 1)[1]
    assert os.path.exists(state) and os.path.exists(state.replace(".solverstate", ".caffemodel"))
    assert not [n for n in os.listdir(out) if n.startswith(".staging-")]
    resumed = subprocess.run(solve_args(folder_root, state, out, "--iters", "1", start="--resume"),
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_sigterm_during_start_up_leaves_no_staging(folder_root, init_weights, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    proc, stdout, stderr = start(solve_args(folder_root, init_weights, out, "--iters", "5"),
                                 tmp_path, "b")

    def staging():
        return any(n.startswith(".staging-") for n in os.listdir(out))
    assert wait_for(lambda: staging() or proc.poll() is not None)
    assert staging(), "the run finished its start-up before the test could signal it"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 143, stderr.read_text()[-2000:]
    assert "terminated by SIGTERM" in stderr.read_text()
    assert "iter " not in stdout.read_text()                     # stopped before training
    assert not [n for n in os.listdir(out) if n.startswith(".staging-")]


def test_second_run_into_the_same_directory_exits_2_naming_the_first(folder_root, init_weights,
                                                                     tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from solvers.training.lock import RunLock; "
                               f"lock = RunLock({str(out)!r}); print('locked', flush=True); "
                               "time.sleep(120)"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run(solve_args(folder_root, init_weights, out, "--iters", "1"),
                                cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"is in use by another run (PID {holder.pid}" in second.stderr
        assert len(our_lines(second.stderr)) == 1
        assert not (out / "metrics.jsonl").exists() and not (out / "solver.prototxt").exists()
    finally:
        holder.kill()                           # dies holding the lock: a stale lock file
        holder.wait()
    third = subprocess.run(solve_args(folder_root, init_weights, out, "--iters", "1"),
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"left by a run that is gone ({holder.pid} " in third.stderr
    assert (out / "final.caffemodel").exists()


def test_divergence_names_only_a_finite_snapshot(folder_root, init_weights, tmp_path):
    """At --base-lr 1e3 the weights are inf one iteration before the loss is
    NaN; that snapshot used to be named as the last good one."""
    out = tmp_path / "run"
    r = subprocess.run(solve_args(folder_root, init_weights, out, "--base-lr", "1e3",
                                  "--snapshot-every", "1", "--iters", "50"),
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr[-2000:]
    snaps = out / "snapshots"
    models = sorted(n for n in os.listdir(snaps) if n.endswith(".caffemodel"))
    assert models and all(file_weights_finite(str(snaps / n)) for n in models)
    newest = max(models, key=lambda n: int(n.split("_iter_")[1].split(".")[0]))
    assert f"Last good (finite) snapshot: {snaps / newest}" in r.stderr


def test_no_room_for_a_snapshot_is_an_error_not_a_caffe_abort(toy_root, tmp_path, monkeypatch):
    run = make_run(toy_root, tmp_path / "run", snapshot_every=2)
    run.train(1, display=1, log=quiet)
    monkeypatch.setattr(outputs, "free_bytes", lambda d: 1 << 10)
    with pytest.raises(RunError, match="cannot write .*train_iter_2.solverstate: .* MiB free"):
        run.train(3, display=1, log=quiet)       # Caffe would snapshot after the next step
    assert run.solver.iter == 1
    assert not [n for n in os.listdir(tmp_path / "run" / "snapshots") if "_iter_2" in n]
    assert np.isfinite(run.loss())


def test_fresh_run_into_an_existing_run_on_a_full_disk_changes_nothing(
        folder_root, init_weights, tmp_path, monkeypatch, capsys):
    """Before: Caffe aborted (exit 134) mid-snapshot, the old run's final.caffemodel beside new
    snapshots and its metrics.jsonl set aside. Now: one line, exit 2, the directory as it was."""
    from tests.disk_fixtures import fill, tmpfs
    from tests.test_solve_robustness import tree_bytes
    with tmpfs(tmp_path / "small", "2m") as small:
        out = os.path.join(small or str(tmp_path / "run"), "run")
        os.makedirs(os.path.join(out, "snapshots"))
        for name, text in (("final.caffemodel", "old weights"), ("metrics.jsonl", '{"iteration": 8}\n')):
            with open(os.path.join(out, name), "w") as f:
                f.write(text)
        before = tree_bytes(out)
        args = solve_args(folder_root, init_weights, out, "--iters", "2", "--snapshot-every", "1")
        if small is None:                       # cannot mount: in-process, a fake probe
            from solvers.training.cli import main
            monkeypatch.setattr(outputs, "free_bytes", lambda d: 64 << 10)
            assert main(args[3:]) == 2
            err = capsys.readouterr().err
        else:
            fill(small, leave=64 << 10)
            r = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
            assert r.returncode == 2, r.stderr[-2000:]
            err = r.stderr
        assert "cannot write" in err and "MiB free" in err and "Check failed" not in err
        assert len(our_lines(err)) == 1, err
        after = tree_bytes(out)
        assert after.pop(".lock", b"") == b""        # the run's lock file, released
        assert after == before
        assert not [n for n in os.listdir(out) if n.startswith(".staging-")]


def test_solve_refuses_a_file_as_its_run_directory(folder_root, init_weights, tmp_path):
    taken = tmp_path / "file"
    taken.write_text("x")
    for out, words in ((taken, "is a file; expected a directory"),
                       (taken / "sub", f"{taken} is a file, not a directory")):
        r = subprocess.run(solve_args(folder_root, init_weights, out, "--iters", "1"), cwd=ROOT,
                           env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and words in r.stderr, r.stderr[-2000:]
        assert len(our_lines(r.stderr)) == 1
    assert taken.read_text() == "x"
