"""The GPU kit's tools without a kit: argument errors, the CUDA-library
finder, the ldd check, the gtest counter and the self-test's comparison.

The kit itself (build, unpack, `env -i` self-test, ldd check over every
file) is `make kit-check`, which needs the CUDA build; these tests pin the
pieces' behaviour on inputs made here."""
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from kit import cuda_libs, elf, gtest, ldcheck, selftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "kit", "run.sh")


def run_sh(*args):
    return subprocess.run(["bash", RUN, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    ([], "OUTDIR is missing"),
    (["o", "--gpu", "x"], "--gpu x: expected a GPU index"),
    (["o", "--parts", "compare,fly"], "unknown part 'fly'"),
    (["o", "--bogus"], "unknown option --bogus"),
    (["o", "--gpu"], "--gpu needs a value"),
    (["o", "--gtest-seconds", "0"], "expected a whole number of seconds > 0"),
    (["o", "--nvidia-site-packages", "/nonexistent"], "no nvidia/ directory there"),
    (["o", "--compare", "x.npz"], "--compare goes with --selftest"),
    (["o", "p"], "one OUTDIR only"),
])
def test_run_sh_rejects_bad_arguments_in_one_line(args, message, tmp_path):
    args = [str(tmp_path / a) if a == "o" else a for a in args]
    out = run_sh(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kit/run.sh: error:") and message in lines[0]


def test_run_sh_outside_a_kit_says_so(tmp_path):
    out = run_sh(str(tmp_path / "out"))
    assert out.returncode == 2
    assert "not an unpacked GPU kit" in out.stderr and "make gpu-kit" in out.stderr
    assert not (tmp_path / "out").exists()


def test_run_sh_refuses_a_non_empty_outdir(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    out = run_sh(str(tmp_path))
    assert out.returncode == 2 and "is not empty" in out.stderr


def fake_nvidia_site(root, libs, version_of=None):
    """site-packages/nvidia/<part>/lib/<soname> (empty files) and the wheel
    RECORD that owns them."""
    site = root / "site-packages"
    for part, names in libs.items():
        d = site / "nvidia" / part / "lib"
        d.mkdir(parents=True)
        for n in names:
            (d / n).write_bytes(b"")
    if version_of:
        dist, version, part = version_of
        info = site / f"{dist}-{version}.dist-info"
        info.mkdir()
        rows = [f"nvidia/{part}/lib/{n},sha256=x,0" for n in libs[part]]
        (info / "RECORD").write_text("\n".join(rows) + "\n")
    return site / "nvidia"


def test_cuda_libs_reports_found_missing_and_wheel_versions(tmp_path, capsys):
    nv = fake_nvidia_site(tmp_path, {
        "cu13": ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"],
        "cudnn": ["libcudnn.so.9", "libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9",
                  "libcudnn_engines_precompiled.so.9"]},
        version_of=("nvidia_cudnn_cu13", "9.13.0.50", "cudnn"))
    export = tmp_path / "ld"
    rc = cuda_libs.main(["--nvidia-dir", str(nv), "--export", str(export)])
    text = capsys.readouterr().out
    assert rc == 1                                            # NCCL is required
    assert "MISSING  libnccl.so.2" in text and "missing required CUDA libraries: libnccl.so.2" in text
    assert "MISSING  libnvrtc.so.13" in text and "(optional)" in text
    cudnn_line = next(l for l in text.splitlines() if "libcudnn.so.9 " in l)
    assert "found" in cudnn_line and "nvidia_cudnn_cu13 9.13.0.50" in cudnn_line
    assert export.read_text().strip() == f"{nv}/cu13/lib:{nv}/cudnn/lib"

    (nv / "cudnn" / "lib" / "libnccl.so.2").write_bytes(b"")
    assert cuda_libs.main(["--nvidia-dir", str(nv)]) == 0


def test_cuda_libs_rejects_a_missing_directory(tmp_path):
    with pytest.raises(SystemExit) as exc:
        cuda_libs.main(["--nvidia-dir", str(tmp_path / "nope")])
    assert exc.value.code == 2


def test_ldcheck_passes_glibc_only_programs_and_flags_other_libraries(tmp_path, capsys):
    kit = tmp_path / "kit"
    (kit / "runtime" / "bin").mkdir(parents=True)
    true_bin = shutil.which("true")
    assert set(elf.ldd(true_bin, dict(os.environ))) <= elf.HOST_ALLOWED   # glibc only
    shutil.copy(true_bin, kit / "runtime" / "bin" / "true")
    assert ldcheck.main([str(kit)]) == 0
    # python links libpython (and more) from outside the kit: refused, named
    shutil.copy(os.path.realpath(sys.executable), kit / "runtime" / "bin" / "python")
    needs = set(elf.ldd(str(kit / "runtime" / "bin" / "python"), {})) - elf.HOST_ALLOWED
    capsys.readouterr()
    rc = ldcheck.main([str(kit)])
    text = capsys.readouterr().out
    if needs:
        assert rc == 1 and "FAIL" in text
        assert any(n in text for n in needs)
    else:                                                     # a fully static python
        assert rc == 0


def test_cuda_pattern_names_only_nvidia_libraries():
    for name in ("libcudart.so.13", "libcublasLt.so.13", "libcudnn_cnn.so.9", "libnccl.so.2",
                 "libnvrtc.so.13", "libcuda.so.1", "libcurand.so.10"):
        assert elf.is_cuda(name), name
    for name in ("libcaffe.so.1.0.0-rc3", "libopenblas.so.0", "libcudart_static.a.txt", "libc.so.6"):
        assert not elf.is_cuda(name), name


FAKE_GTEST = r'''#!/usr/bin/env python3
import os, sys, time
tests = {"ConvTest/0": ["A", "B"], "ConvTest/1": ["C", "D"], "ConvTest/2": ["A"],
         "CuDNNConvTest/0": ["A", "B"]}
flt = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--gtest_filter=")), "*")
def selected(name):
    gpu = name.startswith("CuDNN") or "/2." in name or "/3." in name
    if flt == "-*CuDNN*:*/2.*:*/3.*":
        return not gpu
    if flt == "*CuDNN*:*/2.*:*/3.*":
        return gpu
    return name in flt.split(":")
if "--gtest_list_tests" in sys.argv:
    for suite, cases in tests.items():
        if any(selected(f"{suite}.{c}") for c in cases):
            print(suite + ".  # TypeParam = x")
            for c in cases:
                if selected(f"{suite}.{c}"):
                    print("  " + c)
    sys.exit(0)
assert os.path.exists("src/caffe/test/test_data/solver_data_list.txt")   # run in the data dir
print("Cuda number of devices: 0", flush=True)
for suite, cases in tests.items():
    for c in cases:
        if selected(f"{suite}.{c}"):
            print(f"[ RUN      ] {suite}.{c}", flush=True)
            if (suite, c) == ("CuDNNConvTest/0", "B"):
                time.sleep(30)
            if (suite, c) == ("ConvTest/1", "C"):
                print("F1204 check failed", flush=True)
                os.abort()
            status = "FAILED" if (suite, c) == ("ConvTest/0", "B") else "OK"
            print(f"[{status:^10s}] {suite}.{c} (3 ms)", flush=True)
sys.exit(0)
'''


def fake_gtest(tmp_path):
    path = tmp_path / "caffe-gtest"
    path.write_text(FAKE_GTEST)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    data = tmp_path / "data" / "src" / "caffe" / "test" / "test_data"
    data.mkdir(parents=True)
    (data / "solver_data_list.txt").write_text("x\n")
    return ["--binary", str(path), "--data-dir", str(tmp_path / "data")]


def summary_of(result):
    return json.loads(result.read_text().splitlines()[-1][len("json: "):])


def test_gtest_counts_passes_failures_and_a_crash_then_runs_on(tmp_path):
    result = tmp_path / "gtest.txt"
    rc = gtest.main([str(result), *fake_gtest(tmp_path), "--cpu", "--seconds", "20"])
    assert rc == 1
    summary = summary_of(result)
    assert (summary["selected"], summary["passed"], summary["failed"], summary["not_run"]) == (4, 2, 2, 0)
    assert summary["failed_tests"] == ["ConvTest/0.B", "ConvTest/1.C"]
    assert summary["crashed_tests"] == ["ConvTest/1.C"]       # and ConvTest/1.D still ran
    text = result.read_text()
    assert "FAILED ConvTest/0.B" in text and "CRASHED ConvTest/1.C" in text
    assert summary["filter"] == gtest.CPU_FILTER


def test_gtest_time_limit_counts_the_rest_as_not_run(tmp_path):
    result = tmp_path / "gtest.txt"
    rc = gtest.main([str(result), *fake_gtest(tmp_path), "--gpu", "0", "--seconds", "3"])
    summary = summary_of(result)
    assert rc == 1 and summary["timed_out"]
    assert (summary["selected"], summary["passed"], summary["not_run"]) == (3, 2, 1)
    assert summary["suites"]["CuDNNConvTest"] == {"passed": 1, "not run": 1}


def test_selftest_comparison_finds_a_changed_gradient(tmp_path):
    arrays = {"score": np.linspace(-3, 5, 50, dtype=np.float32), "conv1.0.grad": np.ones(8, np.float32)}
    np.savez(tmp_path / "ref.npz", **arrays)
    assert selftest.compare(arrays, str(tmp_path / "ref.npz"), 1e-5) == (0.0, [])
    changed = dict(arrays, **{"conv1.0.grad": arrays["conv1.0.grad"] * (1 + 1e-3)})
    worst, bad = selftest.compare(changed, str(tmp_path / "ref.npz"), 1e-5)
    assert worst == pytest.approx(1e-3, rel=1e-2) and bad and "conv1.0.grad" in bad[0]
    worst, bad = selftest.compare({"score": arrays["score"]}, str(tmp_path / "ref.npz"), 1e-5)
    assert bad and "arrays differ" in bad[0]
