"""solvers.training.multigpu without a GPU: the supervision of the rank processes
(spawned, waited on together, the rest stopped when one fails, a signal
death reported) driven with stand-in ranks (tests/fake_ranks.py), and each
rank's Run on the CPU build (resume on every rank, snapshots on rank 0,
one reduce per iteration when iter_size > 1)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from google.protobuf import text_format

from caffe.proto import caffe_pb2

from data.layouts import write_voc
from net_specs import NetConfig, get_model
from net_specs.datasets import VOC_MEAN, Dataset, Head, Source
from solvers.training import multigpu
from solvers.training.multigpu import MultiGpuConfig, open_rank, start_ranks, supervise
from tests import fake_ranks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quiet(_line):
    pass


def launch(plan, tmp_path, **kw):
    procs, stop = start_ranks(fake_ranks.behave, (tuple(plan), str(tmp_path)), len(plan))
    t0 = time.monotonic()
    status = supervise(procs, stop, log=kw.pop("log", quiet), **kw)
    return status, time.monotonic() - t0, procs


def test_ranks_are_spawned_not_forked(tmp_path, monkeypatch):
    """A forked rank inherits the parent's state (its CUDA context among it,
    which does not survive fork); a spawned one starts from a fresh import."""
    monkeypatch.setattr(fake_ranks, "STATE", "set in the parent")
    status, _, procs = launch(["ok", "ok"], tmp_path)
    assert status == 0
    assert [p.exitcode for p in procs] == [0, 0]
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.state").read_text() == "imported"


def test_a_rank_killed_by_a_signal_fails_the_run_and_the_blocked_rank_is_stopped(tmp_path):
    """Rank 0 exits 0, rank 1 dies by SIGABRT, rank 2 hangs (as a rank in an
    NCCL all-reduce whose peer died): the parent does not wait for rank 2
    forever and reports the signal (before: max(exitcode or 0) over the
    joined ranks, i.e. success, after rank 2 was joined... never)."""
    lines = []
    status, took, procs = launch(["ok", "abort", "blocked"], tmp_path, log=lines.append,
                                 grace=0.5, kill_grace=2)
    assert status == 128 + signal.SIGABRT
    assert took < 15
    assert procs[0].exitcode == 0 and procs[1].exitcode == -signal.SIGABRT
    assert procs[2].exitcode == -signal.SIGTERM            # stopped by the parent
    assert not any(p.is_alive() for p in procs)
    assert lines == ["solvers.solve: rank 1 died by signal SIGABRT; stopping the other rank(s)"]


def test_a_failing_rank_sets_the_flag_the_others_stop_on(tmp_path):
    status, took, procs = launch(["exit2", "until-stop"], tmp_path, grace=60)
    assert status == 2
    assert took < 30                                       # well before the grace ran out
    assert procs[1].exitcode == 0
    assert (tmp_path / "rank1.stopped").read_text() == "flag"


def supervised_in_a_terminal_group(plan, tmp_path):
    """The parent (start_ranks + supervise) as its own process group, as a
    terminal runs it; returns once every rank has started."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from solvers.training.multigpu import start_ranks, supervise
        from tests import fake_ranks
        if __name__ == "__main__":
            procs, stop = start_ranks(fake_ranks.behave, ({tuple(plan)!r}, {str(tmp_path)!r}), {len(plan)})
            sys.exit(supervise(procs, stop, grace=60))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"rank{r}.state").exists() for r in range(len(plan))):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    return proc


def test_ctrl_c_sets_the_flag_and_exits_130(tmp_path):
    """Ctrl-C reaches every process of the terminal's group: the parent sets
    the shared flag and the ranks (which ignore SIGINT) stop on it."""
    proc = supervised_in_a_terminal_group(["until-stop", "until-stop"], tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert all((tmp_path / f"rank{r}.stopped").exists() for r in (0, 1))


def test_a_second_ctrl_c_stops_ranks_that_never_look_at_the_flag(tmp_path):
    proc = supervised_in_a_terminal_group(["blocked", "blocked"], tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None                      # blocked ranks: the parent still waits
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)         # not the 60 s grace
    assert proc.returncode == 130, err


def test_exit_descriptions():
    assert multigpu.describe_exit(-6) == "died by signal SIGABRT"
    assert multigpu.describe_exit(3) == "exited with status 3"
    assert multigpu.exit_status(-9) == 137 and multigpu.exit_status(2) == 2


# ---- each rank's Run, on the CPU build ---------------------------------------------
WIDTH = 1 / 16
N_CLASSES = 4


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc") / "VOC2011")
    write_voc(root, [(f"t{i}", (36 + 4 * i, 44)) for i in range(3)], n_classes=N_CLASSES, seed=1,
              split="train")
    write_voc(root, [("v0", (40, 36))], n_classes=N_CLASSES, seed=2, split="val")
    voc = "layers.voc.VOCSegDataLayer"
    return Dataset("toy", "tiny VOC-layout fixture", VOC_MEAN, (Head("label", N_CLASSES),),
                   train=Source(voc, root, "train"), val=Source(voc, root, "val"))


def config(tmp_path, **kw):
    return MultiGpuConfig(gpus=(0, 1), out=str(tmp_path / "run"), **kw)


def toy_net(model, toy):
    return NetConfig(model, toy, width=WIDTH, workers=0)


def written_solver(run):
    return text_format.Parse(open(run.solver_path).read(), caffe_pb2.SolverParameter())


def test_only_rank_0_takes_periodic_snapshots(toy, tmp_path):
    model = get_model("fcn32s")
    rank1 = multigpu.make_run(config(tmp_path, snapshot_every=7), toy_net(model, toy), 1)
    rank1.commit()
    assert written_solver(rank1).snapshot == 0               # Caffe: 0 = no periodic snapshots
    rank0 = multigpu.make_run(config(tmp_path, snapshot_every=7), toy_net(model, toy), 0)
    rank0.commit()
    assert written_solver(rank0).snapshot == 7
    assert written_solver(rank0).layer_wise_reduce           # iter_size 1: layer-wise, Caffe's default


def test_layer_wise_reduce_is_off_when_iter_size_accumulates(toy, tmp_path):
    model = get_model("voc-fcn-alexnet")
    assert model.solver.iter_size == 20
    run = multigpu.make_run(config(tmp_path), toy_net(model, toy), 0)
    run.commit()
    assert run.param.layer_wise_reduce is False
    assert written_solver(run).layer_wise_reduce is False


def test_resume_restores_the_solver_state_on_every_rank(toy, tmp_path):
    """Before, rank 1 started at iteration 0 with empty momentum history."""
    from solvers.training.run import Run
    model = get_model("fcn32s")
    first = Run.open(toy_net(model, toy), out_dir=str(tmp_path / "first"),
                     solver_overrides=dict(base_lr=1e-8))
    rng = np.random.RandomState(0)
    for blobs in first.solver.net.params.values():
        blobs[0].data[...] = rng.randn(*blobs[0].data.shape) * 0.05
    first.commit()
    first.solver.step(3)
    first.solver.snapshot()
    state = str(tmp_path / "first" / "snapshots" / "train_iter_3.solverstate")
    for rank in (0, 1):
        run = open_rank(config(tmp_path, resume=state), toy_net(model, toy), rank)
        assert run.solver.iter == 3, rank
        for name, blobs in first.solver.net.params.items():
            assert np.array_equal(run.solver.net.params[name][0].data, blobs[0].data), (rank, name)
