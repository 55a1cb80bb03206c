"""bench.gpu_check, as far as a machine without a GPU can run it: the
comparison and its report with the CPU on both sides, GPU rows that fail
cleanly, and argument errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Why this machine has no GPU, as gpu_check says it: the CPU build, or the CUDA
# build of `make cuda-check` on a machine without a GPU.
NO_GPU = ("no GPU 0: the CUDA build sees 0 usable CUDA device"
          if "--cuda" in os.environ.get("CAFFE_BUILD_FLAGS", "") else "this pycaffe is a CPU-only build")

def run(*args):
    env = {k: v for k, v in os.environ.items() if k != "TORCH_PYTHON"}   # --torch-python only
    env["PYTHONPATH"] = ROOT
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
    """On this machine there is no GPU (CPU-only build, or no driver): each
    GPU measurement is a row saying so and the exit status is 1, never a
    traceback."""
    out = run("--parts", "compare", "--devices", "cpu,gpu0", "--models", "voc-fcn-alexnet",
              "--size", "32x32")
    assert out.returncode == 1
    assert "| gpu0 | cpu |" in out.stdout and "needs a GPU: " + NO_GPU in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def read_results(path):
    """(text before the json line, the json record) of one DIR/<part>.txt."""
    text = open(path).read()
    table, _, record = text.rpartition("\njson: ")
    assert record.count("\n") == 1 and record.endswith("\n"), "the json line must be the last"
    return table, json.loads(record)


def test_every_part_runs_as_far_as_it_can_without_a_gpu(tmp_path):
    """kit/run.sh's call on a CPU-only machine: one results file per part,
    each a table and a json line, GPU rows saying what needs a GPU, the
    train part measured on the CPU instead, exit 1."""
    out = run("--results", str(tmp_path), "--models", "voc-fcn-alexnet", "--size", "32x32",
              "--width", "1/16", "--iters", "3", "--images", "3", "--image-size", "64x80")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == [f"{p}.txt" for p in sorted(gpu_check.PARTS)]
    for part in gpu_check.PARTS:
        table, record = read_results(tmp_path / f"{part}.txt")
        assert record["part"] == part and record["failed"] is True
        caffe_rows = [r for r in record["rows"] if r.get("engine") != "PyTorch"]
        assert caffe_rows and all("needs a GPU" in r["status"] for r in caffe_rows), part
        assert "| needs a GPU: " + NO_GPU in table or part == "train"
    _, bench = read_results(tmp_path / "bench.txt")
    assert bench["rows"][-1]["status"] == "skipped: no --torch-python given and TORCH_PYTHON is not set"
    _, train = read_results(tmp_path / "train.txt")
    (row,) = train["rows"]
    assert row["device"] == "cpu" and row["iters"] == 3 and row["ms_per_iter"] > 0
    assert 0 <= row["data_wait_share"] < 1 and np.isfinite(row["loss"])
    _, demo = read_results(tmp_path / "demo.txt")
    assert [r["stage"] for r in demo["rows"]] == ["FCN-32s", "FCN-16s", "FCN-8s"]
    assert all(0 < r["cpu_mean_iu"] < 1 for r in demo["rows"])     # the README's reference run
    assert "Traceback" not in out.stdout + out.stderr


def test_a_part_cut_short_by_its_budget_says_so(tmp_path):
    out = run("--parts", "train", "--results", str(tmp_path), "--budgets", "train=1",
              "--width", "1/16", "--images", "2", "--image-size", "64x80")
    assert out.returncode == 1
    table, record = read_results(tmp_path / "train.txt")
    assert record["cut_short"] is True and record["rows"][0]["iters"] < 20
    assert "CUT SHORT" in table


def test_demo_reference_is_read_from_the_readme_section(tmp_path):
    from demo.robustness import README_BEGIN, README_END
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\n| stage | pixel acc | mean acc | mean IU | fwIU | time (s) |\n"
                      "|---|---|---|---|---|---|\n| FCN-32s | 0.9 | 0.8 | 0.65 | 0.85 | 138 |\n"
                      "| FCN-8s | 0.99 | 0.98 | 0.94 | 0.98 | 70 |\n"
                      "| range | | 0.64–0.66 | 0.67–0.71 | 0.93–0.95 | | |\n"
                      f"{README_END}\n| FCN-16s | 0.1 | 0.1 | 0.1 | 0.1 | 1 |\n")
    ref = gpu_check.demo_reference(str(readme))
    assert ref["fcn32s"] == dict(pixel_acc=0.9, mean_acc=0.8, mean_iu=0.65, fw_iu=0.85, seconds=138.0,
                                 range="0.64–0.66")
    assert ref["fcn8s"]["mean_iu"] == 0.94 and ref["fcn16s"] == {"range": "0.67–0.71"}
    assert gpu_check.demo_reference(str(tmp_path / "missing.md")) == {}


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
    (["--budgets", "compare=soon"], "--budgets: 'compare=soon' is not PART=SECONDS"),
    (["--budgets", "speed=10"], "--budgets: 'speed=10' is not PART=SECONDS"),
    (["--torch-python", "/nonexistent/python3"], "--torch-python: /nonexistent/python3 is not"),
    (["--iters", "0"], "--iters: 0 must be at least 1"),
    (["--image-size", "375"], "--image-size: '375' is not HxW"),
    (["--width", "0"], "--width must be positive"),
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


# ---- the GPU branches, with the children faked --------------------------------------
class FakeArgs:
    """What parse_args gives the parts, for one small model."""
    gpu, size, runs, tolerance, width, iters, images = 0, "32x32", 2, 1e-3, 1.0, 20, 24
    image_size, cudnn_benchmark, torch_device = "375x500", False, "cuda:0"
    models = ["voc-fcn-alexnet"]
    devices = ["cpu", "gpu0", "gpu0/caffe"]
    budgets = dict(gpu_check.BUDGETS)

    def __init__(self, tmp_path, torch_python=None):
        self.demo_out = str(tmp_path / "demo")
        self.torch_python = torch_python


def fake_child(calls):
    """common.run_child as a GPU machine's children would answer."""
    def run_child(module, args, env=None, timeout=900, python=None, flag="--child"):
        calls.append((module, args[0] if module == "gpu_check" else flag))
        if module == "gpu_check" and args[0] == "compare":
            model, size, device, path = args[1:]
            wobble = 1e-5 if device == "gpu0" else 0.0
            np.savez(path, score=np.array([1.0, 2.0 + wobble]), **{"grad conv1[0]": np.ones(3)})
            return dict(device=device, arrays=2, nonzero_grads=1, ms=5.0)
        if module == "gpu_check" and args[0] == "bench":
            mode = args[3]
            return dict(ms=4.0 if mode == "fwd" else 12.0, gflops=5000.0, gmac=10.0,
                        gpu_net_mb=900.0, gpu_used_mb=1500.0)
        if module == "torch_ref":
            return dict(ms=3.2, torch="2.11.0+cu130", device="cuda:0", tf32=False,
                        cudnn_benchmark=False, max_rel_diff_vs_caffe=2e-6)
        if module == "train_speed":
            return dict(iters=20, asked=20, warmup=2, cut_short=False, setup_s=9.0, images=24,
                        image="375x500", ms_per_iter=80.0, data_wait_share=0.004, loss=1e6)
        if module == "gpu_check" and args[0] == "standin":
            return dict(root=args[1], weights=args[2])
        raise AssertionError((module, args))
    return run_child


def test_the_gpu_branches_of_every_part(tmp_path, monkeypatch):
    """Every part as it runs on a machine with two GPUs, its children faked:
    the rows, ratios and fractions the files would hold."""
    import types
    calls = []
    monkeypatch.setattr(gpu_check.common, "run_child", fake_child(calls))
    monkeypatch.setattr(gpu_check.peak, "run", lambda *a, **k: [dict(caffe_gflops=40000.0)])
    monkeypatch.setattr(gpu_check, "gpu_name", lambda gpu: "NVIDIA H200")
    monkeypatch.setattr(gpu_check, "run_demo", lambda gpu, out, timeout: dict(
        returncode=0, wall_s=50, output="done", seconds={"fcn32s": 20, "fcn16s": 5, "fcn8s": 10},
        stages={s: dict(mean_iu=0.6, pixel_acc=0.9) for s in ("fcn32s", "fcn16s", "fcn8s")}))
    import subprocess as sp

    def fake_solve(cmd, **kw):
        out = cmd[cmd.index("--out") + 1]
        os.makedirs(out)
        open(os.path.join(out, "final.caffemodel"), "w").close()
        return types.SimpleNamespace(returncode=0, stdout="[voc-fcn8s] done", stderr="")
    monkeypatch.setattr(sp, "run", fake_solve)
    machine = gpu_check.Machine(0, True, 2, None)
    args = FakeArgs(tmp_path, torch_python=sys.executable)
    quiet = lambda *_: None  # noqa: E731

    compare = gpu_check.compare_part(args, machine, quiet)
    assert [r["status"] for r in compare.rows] == ["yes", "yes"] and not compare.failed
    assert compare.rows[0]["score_rel"] == pytest.approx(1e-5 / 2)

    bench = gpu_check.bench_part(args, machine, quiet)
    assert not bench.failed, bench.rows
    fwd, fwdbwd, torch_row = bench.rows
    assert fwd["frac_attainable"] == pytest.approx(5000 / 40000)
    assert fwd["frac_nominal"] == pytest.approx(5000 / 66900)
    assert torch_row["ratio"] == pytest.approx(4.0 / 3.2) and torch_row["engine"] == "PyTorch 2.11.0+cu130"
    assert "cudnn.benchmark off" in "\n".join(bench.notes)

    train = gpu_check.train_part(args, machine, quiet)
    assert train.rows[0]["status"] == "ok" and not train.failed

    demo = gpu_check.demo_part(args, machine, quiet)
    assert [r["status"] for r in demo.rows] == ["ok"] * 3 and demo.rows[2]["cpu_mean_iu"] > 0.5

    nccl = gpu_check.nccl_part(args, machine, quiet)
    assert nccl.rows[0]["status"] == "ok" and not nccl.failed
    one_gpu = gpu_check.nccl_part(args, gpu_check.Machine(0, True, 1, None), quiet)
    assert one_gpu.rows[0]["status"].startswith("skipped: needs 2 GPUs") and not one_gpu.failed
    assert ("torch_ref", "--plain") in calls and ("gpu_check", "export") not in calls
    for part in (compare, bench, train, demo, nccl):
        json.loads(part.text().rsplit("json: ", 1)[1])
