"""bench.before_after's non-timing logic: the CPU's ISA read from cpuinfo, the
convolution engine read from the libraries caffe's _caffe.so links, the
onnxruntime column computing what Caffe computes, and the quick run writing
every column. No assertion here is on a time."""
import json
import os
import subprocess
import sys

import pytest

from bench import before_after, common, engine

EPYC_AVX512 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl
processor\t: 1
model name\t: AMD EPYC 9B14
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
EPYC_AVX2 = """processor\t: 0
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c avx2 bmi2
"""
OLD = """model name\t: Intel(R) Core(TM)2 Quad CPU Q9550
flags\t\t: fpu sse sse2 ssse3 sse4_1
"""


def test_isa_from_cpuinfo():
    c = engine.cpu(EPYC_AVX512)
    assert c["model"] == "AMD EPYC 9B14" and c["isa"] == "AVX-512"
    assert "avx512f" in c["flags"] and "fpu" not in c["flags"]
    assert engine.cpu(EPYC_AVX2)["isa"] == "AVX2"
    assert engine.cpu(OLD) == dict(model="Intel(R) Core(TM)2 Quad CPU Q9550", isa="SSE4.1",
                                   flags=["sse4_1"])
    assert engine.cpu("")["isa"] == "none"
    assert engine.this_cpu()["isa"] in ("AVX-512", "AVX2", "AVX", "SSE4.1", "none")


def test_engine_selected_by_build_and_environment():
    assert engine.selected({}, has_onednn=True) == "onednn"
    assert engine.selected({"CAFFE_CPU_CONV": "im2col"}, has_onednn=True) == "im2col"
    assert engine.selected({"CAFFE_CPU_REFERENCE": "1", "CAFFE_CPU_CONV": "onednn"}, True) == "reference"
    assert engine.selected({"CAFFE_CPU_REFERENCE": "0"}, has_onednn=False) == "im2col"
    assert engine.selected({}, has_onednn=False) == "im2col"          # the switch is ignored there
    assert engine.env_for("im2col") == {"CAFFE_CPU_REFERENCE": "0", "CAFFE_CPU_CONV": "im2col"}
    assert engine.env_for("onednn") == {"CAFFE_CPU_REFERENCE": "0", "CAFFE_CPU_CONV": None}
    with pytest.raises(ValueError, match="expected one of im2col, onednn"):
        engine.env_for("winograd")


def _fake_caffe(tmp_path, with_onednn):
    """A `caffe` package whose _caffe.so is a real shared object, linked to a
    stand-in libdnnl.so.2 (its own soname, found through the RUNPATH) or not."""
    lib = tmp_path / "lib"
    pkg = tmp_path / "site" / "caffe"
    lib.mkdir()
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (tmp_path / "x.c").write_text("int fake_symbol(void) { return 1; }\n")
    cc = ["cc", "-shared", "-fPIC", str(tmp_path / "x.c")]
    subprocess.run(cc + ["-Wl,-soname,libdnnl.so.2", "-o", str(lib / "libdnnl.so.2")], check=True)
    extra = ["-Wl,--no-as-needed", str(lib / "libdnnl.so.2"), f"-Wl,-rpath,{lib}"] if with_onednn else []
    subprocess.run(cc + ["-o", str(pkg / "_caffe.so")] + extra, check=True)
    return {"PYTHONPATH": os.pathsep.join([common.ROOT, str(tmp_path / "site")])}


@pytest.mark.parametrize("with_onednn", [True, False])
def test_engine_detected_from_the_libraries_caffe_links(tmp_path, with_onednn):
    env = _fake_caffe(tmp_path, with_onednn)
    found = engine.probe(env=env)
    assert found["caffe"] == str(tmp_path / "site" / "caffe")
    if with_onednn:
        assert found == dict(found, engine="onednn",
                             libdnnl=os.path.realpath(tmp_path / "lib" / "libdnnl.so.2"))
    else:
        assert found["engine"] == "im2col" and found["libdnnl"] is None
    switched = engine.probe(env=dict(env, **engine.env_for("im2col")))
    assert switched["engine"] == "im2col"
    assert engine.probe(env=dict(env, CAFFE_CPU_REFERENCE="1"))["engine"] == "reference"


def test_this_build_reports_its_engine():
    """What the timing children record for the real caffe of this environment."""
    found = engine.probe()
    lib = common.caffe_library("libdnnl")
    assert found["engine"] == ("onednn" if lib else "im2col")
    assert found["libdnnl"] == (lib and lib["realpath"])
    assert engine.probe(env=engine.env_for("im2col"))["engine"] == "im2col"


@pytest.mark.onnx
def test_onnxruntime_child_computes_what_caffe_computes():
    """The onnxruntime column's child, on our ONNX export of a randomly filled
    FCN-AlexNet (grouped convolutions, LRN, the 63-wide upscore) at an odd size."""
    r = common.run_child("ort_ref", ["voc-fcn-alexnet", "67x91", 1, 1, 1],
                         env=common.thread_env(1))
    assert "error" not in r, r
    assert r["threads"] == 1 and r["mode"] == "fwd" and r["peak_rss_mb"] > 0
    assert r["output_scale"] > 1.0, "degenerate output: random weights produced no signal"
    assert r["max_rel_diff_vs_caffe"] <= 1e-4, r


def test_full_plan():
    """The default run: every model x size x thread count forward, forward+backward
    at 500x500 only (1000x1000 training passes would double the run's time)."""
    configs = before_after.plan(before_after.MODELS, before_after.SIZES,
                                before_after.FWDBWD_SIZES, before_after.THREADS, before_after.MODES)
    assert len(configs) == 3 * 2 * 2 + 3 * 2
    assert ("voc-fcn8s", "1000x1000", 2, "fwd") in configs
    assert ("voc-fcn-googlenet", "500x500", 1, "fwdbwd") in configs
    assert not any(c[1] == "1000x1000" and c[3] == "fwdbwd" for c in configs)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "bench.before_after", *args], cwd=common.ROOT,
                          env=dict(os.environ, PYTHONPATH=common.ROOT), capture_output=True,
                          text=True)


@pytest.mark.parametrize("args,message", [
    (["--modes", "train"], "--modes train: expected fwd, fwdbwd"),
    (["--threads", "two"], "--threads/--sizes"),
    (["--caffe-python", "/nonexistent/python"], "--caffe-python /nonexistent/python: not an executable"),
])
def test_bad_arguments_exit_2(args, message):
    out = _run(*args, "--no-save")
    assert out.returncode == 2 and message in out.stderr.splitlines()[-1], out.stderr


@pytest.mark.slow
@pytest.mark.onnx
def test_quick_run_writes_every_column(tmp_path):
    path = tmp_path / "record.json"
    out = _run("--quick", "--models", "voc-fcn-alexnet", "--threads", "1", "--out", str(path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    cpu = engine.this_cpu()
    assert lines[0].count(f"ISA {cpu['isa']}") == 1 and cpu["model"] in lines[0]
    record = json.loads(path.read_text())
    assert record["host"]["isa"] == cpu["isa"] and record["cpu"]["model"] == cpu["model"]
    assert record["before"] == "im2col" and record["peaks"]["1"] > 0
    onednn = record["caffe"]["engine"] == "onednn"
    rows = {r["mode"]: r for r in record["rows"]}
    assert sorted(rows) == ["fwd", "fwdbwd"]
    for mode, r in rows.items():
        assert r["error"] is None, r
        assert (r["model"], r["size"], r["threads"]) == ("FCN-AlexNet", "96x96", 1)
        assert r["load"] >= 0 and r["gmac"] > 0
        assert r["before_engine"] == "im2col"
        assert r.get("after_engine") == ("onednn" if onednn else None)
        columns = ("before", "after", "torch", "ort") if onednn else ("before", "torch", "ort")
        for key in columns:
            if key == "ort" and mode == "fwdbwd":
                assert "ort_ms" not in r        # onnxruntime: forward only
                continue
            assert r[f"{key}_ms"] > 0 and r[f"{key}_rss"] > 0 and r[f"{key}_peak"] > 0, (key, r)
        assert r["before_torch"] == pytest.approx(r["before_ms"] / r["torch_ms"])
    assert rows["fwd"]["before_ort"] == pytest.approx(rows["fwd"]["before_ms"] / rows["fwd"]["ort_ms"])
    assert "| im2col ms | " in out.stdout and "onnxruntime RSS MiB" in out.stdout
    if not onednn:
        assert "the 'after' column is not run" in out.stdout
