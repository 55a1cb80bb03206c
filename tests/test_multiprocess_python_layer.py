"""Python layers in one-process-per-GPU training (docker/patches/0011).

`solvers/multigpu.py` gives every GPU its own process and tells Caffe so
(`set_solver_count(n)`, `set_solver_rank(r)`, `set_multiprocess(True)`) before
it builds the solver; every FCN train net reads its data through a Python
layer. The sdist refused Python layers in any TRAIN net once the solver count
was above 1 (a guard for threaded multi-GPU, where solvers share one
interpreter). These tests build a real solver the way a rank does, on the CPU,
in a child process each: the refusal is a LOG(FATAL), which would end pytest.
"""
import os
import subprocess
import sys
import textwrap

from tests.test_foundation import toy_solver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RANK = textwrap.dedent("""
    import sys
    import caffe
    caffe.set_mode_cpu()
    caffe.set_solver_count(2)
    caffe.set_solver_rank(int(sys.argv[3]))
    caffe.set_multiprocess(sys.argv[2] == "multiprocess")
    solver = caffe.SGDSolver(sys.argv[1])
    solver.step(2)
    print("loss", float(solver.net.blobs["loss"].data))
    print("score", solver.net.blobs["score"].data.shape)
""")


def run_rank(solver_path, mode, rank):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_minloglevel="0", GLOG_logtostderr="1")
    return subprocess.run([sys.executable, "-c", RANK, str(solver_path), mode, str(rank)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_each_rank_builds_and_steps_a_train_net_with_a_python_data_layer(tmp_path):
    solver_path = toy_solver(tmp_path, base_lr=0.1)
    for rank in (0, 1):
        out = run_rank(solver_path, "multiprocess", rank)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "not implemented in Multi-GPU" not in out.stderr
        lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
        assert lines["score"] == "(1, 2, 21, 27)"
        assert float(lines["loss"]) > 0


def test_threaded_multi_gpu_still_refuses_python_layers(tmp_path):
    """Without multiprocess (threads sharing one interpreter) the guard stays."""
    out = run_rank(toy_solver(tmp_path, base_lr=0.1), "threads", 0)
    assert out.returncode != 0
    assert "PythonLayer is not implemented in Multi-GPU training" in out.stderr
