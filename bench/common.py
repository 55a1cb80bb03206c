"""Helpers every benchmark shares: one timer, one child runner, one net builder.

Every measurement runs in its own child process (`run_child`) so that its
peak resident memory (VmHWM) and its BLAS / thread environment are its own.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
JSON_TAG = "BENCH_JSON "          # prefix of the one result line a child prints
from common.caffe_log import quiet_caffe
from common.report import (N_CORES, THREAD_VARS, host_info, markdown,  # noqa: F401 (re-exported)
                           peak_rss_mb, thread_env)

quiet_caffe()


# ---- timing and memory ---------------------------------------------------------
def model_parser(doc, models, size):
    """The flags every per-model benchmark shares: --models, --size, --runs,
    --threads, and the hidden --child/config its parent passes a child."""
    import argparse
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("config", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(models))
    p.add_argument("--size", default=size)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    return p


def timeit(fn, runs, warmup=1):
    """Median / min wall time of `fn` in ms over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return dict(ms=statistics.median(times), min_ms=min(times), runs=len(times),
                all_ms=[round(t, 2) for t in times])


def reset_peak_rss():
    """Restart this process's VmHWM from its current RSS (Linux >= 4.0), so
    that a later peak_rss_mb() counts only what follows."""
    import gc
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# ---- child processes -----------------------------------------------------------
def emit(result):
    """A child's answer: one tagged JSON line on stdout."""
    print(JSON_TAG + json.dumps(result), flush=True)


# What another interpreter must not inherit from ours (a kit's own runtime).
FOREIGN_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "LD_LIBRARY_PATH", "LD_PRELOAD")


def run_child(module, args, env=None, timeout=900, python=None, flag="--child"):
    """Run `python -m bench.<module> --child ARGS` and return its JSON result.

    Failures (crash, timeout, no result line) come back as {"error": ...}
    so that one broken configuration never stops a whole benchmark.
    `python`: another interpreter; it gets this environment without
    FOREIGN_ENV and with only the repository on PYTHONPATH. A variable
    that `env` maps to None is removed from the child's environment.
    """
    if python:
        full_env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
        full_env["PYTHONPATH"] = ROOT
    else:
        full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}
    cmd = [python or sys.executable, "-m", f"bench.{module}", flag, *map(str, args)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s: {' '.join(cmd[2:])}", "timed_out": True}
    except OSError as exc:
        return {"error": f"cannot run {cmd[0]}: {exc}"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(JSON_TAG):
            return json.loads(line[len(JSON_TAG):])
    lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
    # glog's fatal line ("F1124 ... Cannot use GPU ...") or the exception, else the last line
    why = next((l for l in reversed(lines) if re.match(r"(F\d{4,8} |\w+(Error|Exception)\b)", l)),
               lines[-1])
    return {"error": f"exit {proc.returncode}: {why.strip()}"}


# ---- Caffe ---------------------------------------------------------------------
def set_mode(gpu=None):
    """CPU, or GPU `gpu` (aborts the process on a CPU-only build: run it in a
    child). The device first: set_mode_gpu before set_device would make a
    context on GPU 0 as well."""
    import caffe
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(int(gpu))
        caffe.set_mode_gpu()


def synchronize(gpu):
    """Wait for the GPU's queued work (cudaDeviceSynchronize through the CUDA
    runtime Caffe loaded); nothing on the CPU."""
    if gpu is None:
        return
    from common.cli import cuda_runtime
    status = cuda_runtime().cudaDeviceSynchronize()
    if status != 0:
        raise RuntimeError(f"cudaDeviceSynchronize failed with CUDA error {status}")


def gpu_memory_used_mb():
    """MiB in use on this process's current GPU (cudaMemGetInfo: total - free,
    every process on the device counted), None on a CPU-only build. Read it
    while the net is alive, from inside the process that holds it."""
    import ctypes
    from common.cli import cuda_runtime
    runtime = cuda_runtime()
    if runtime is None:
        return None
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    if runtime.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
        return None
    return (total.value - free.value) / 2 ** 20


def pass_fn(net, gpu, backward=False):
    """One forward (and backward) of `net` as a timed call: only the GPU's
    work. pycaffe's net.forward() / backward() read the outputs / input
    diffs back to host memory (a device-host copy per call); this calls
    Caffe's ForwardFromTo / BackwardFromTo and waits for the GPU instead.
    The inputs stay resident on the device after the first call."""
    last = len(net.layers) - 1

    def step():
        net._forward(0, last)
        if backward:
            net._backward(last, 0)
        synchronize(gpu)
    return step


def parse_size(text):
    """'375x500' -> (375, 500) as (H, W)."""
    h, w = text.lower().split("x")
    return int(h), int(w)


def deploy_proto(model, size, loss=False):
    """The model's deploy NetParameter; with `loss`, plus a label Input and the
    training loss, so that backward does exactly what training does."""
    from net_specs import build
    proto = build(model, "deploy", size=size)
    if loss:
        data = proto.layer[0].input_param.shape[0].dim
        label = proto.layer.add(name="label", type="Input", top=["label"])
        label.input_param.shape.add(dim=[data[0], 1, data[2], data[3]])
        sm = proto.layer.add(name="loss", type="SoftmaxWithLoss", bottom=["score", "label"],
                             top=["loss"])
        sm.loss_param.ignore_label = 255
        sm.loss_param.normalize = False
    return proto


def load_net(proto):
    """caffe.Net (TEST phase) from a NetParameter: netio's one way."""
    from netio.nets import net_from_param
    return net_from_param(proto)


def bilinear(channels, size):
    """Per-channel bilinear upsampling weights (FCN's fixed deconvolution init):
    surgery.bilinear's kernel on the diagonal."""
    from surgery.bilinear import bilinear_kernel
    w = np.zeros((channels, channels, size, size), np.float32)
    w[range(channels), range(channels)] = bilinear_kernel(size)
    return w


def fill_random(net, seed=0):
    """Seeded random weights that keep activations O(1) through any depth.

    Convolutions get He-normal weights and small biases, square
    Deconvolutions the bilinear kernel; other params (Scale) keep their filler.
    """
    rng = np.random.RandomState(seed)
    for name, layer in zip(net._layer_names, net.layers):
        params = net.params.get(name)
        if not params:
            continue
        w = params[0].data
        if layer.type == "Deconvolution" and w.shape[0] == w.shape[1] and w.shape[2] == w.shape[3]:
            w[...] = bilinear(w.shape[0], w.shape[2])
        elif layer.type in ("Convolution", "Deconvolution"):
            fan_in = int(np.prod(w.shape[1:]))
            w[...] = rng.normal(0, np.sqrt(2.0 / fan_in), w.shape)
        else:
            continue
        if len(params) > 1:
            params[1].data[...] = rng.normal(0, 0.01, params[1].data.shape)


def fill_inputs(net, seed=0):
    """Random image-like inputs (and labels, if the net has a loss)."""
    rng = np.random.RandomState(seed + 1)
    for name in net.inputs:
        blob = net.blobs[name]
        if name == "label":
            n_out = net.blobs["score"].channels
            blob.data[...] = rng.randint(0, n_out, blob.data.shape)
        else:
            blob.data[...] = rng.uniform(-100, 100, blob.data.shape)


# ---- the BLAS behind Caffe -----------------------------------------------------
def caffe_lib():
    """Path of the _caffe.so extension (without importing caffe)."""
    import importlib.util
    spec = importlib.util.find_spec("caffe")
    return os.path.join(os.path.dirname(spec.origin), "_caffe.so")


def caffe_library(pattern):
    """The first library matching `pattern` (a regex on the soname) that `ldd`
    (which honours LD_LIBRARY_PATH and lists libcaffe's own dependencies too)
    resolves for _caffe.so: {soname, path, realpath}, or None."""
    out = subprocess.run(["ldd", caffe_lib()], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*(\S*(?:%s)\S*)\s+=>\s+(\S+)" % pattern, line)
        if m:
            return dict(soname=m.group(1), path=m.group(2), realpath=os.path.realpath(m.group(2)))
    return None


def caffe_blas():
    """The BLAS library Caffe resolves in this environment (caffe_library)."""
    found = caffe_library("blas|blis")
    if found is None:
        raise RuntimeError(f"ldd of {caffe_lib()} shows no BLAS library")
    return found


def mapped_libraries(pattern):
    """Real paths of the files mapped into this process that match `pattern`."""
    found = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if re.search(pattern, path):
                found.add(os.path.realpath(path))
    return sorted(found)


def loaded_blas():
    """Real paths of the BLAS libraries mapped into this process, except the
    copies bundled in wheels (numpy's and torch's own)."""
    return [p for p in mapped_libraries(r"lib(open)?blas|libblis") if "site-packages" not in p]


def loaded_libcaffe():
    """Real path of the libcaffe.so mapped into this process (None if none)."""
    return next(iter(mapped_libraries(r"/libcaffe\.so")), None)


def blas_variant(realpath):
    """'openblas-pthread', 'blis-openmp', ... from a library's real path."""
    parent = os.path.basename(os.path.dirname(realpath))
    return parent if re.match(r"(openblas|blis)", parent) else os.path.basename(realpath)


# ---- reporting -----------------------------------------------------------------
class OtherLoad:
    """How many cores other processes kept busy while we measured: all busy
    CPU time (/proc/stat) minus our own and our children's (getrusage)."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        import resource
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
        own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                    resource.getrusage(resource.RUSAGE_CHILDREN)))
        return time.monotonic(), busy, own

    def cores(self):
        (t0, b0, o0), (t1, b1, o1) = self.start, self._sample()
        return max(0.0, ((b1 - b0) - (o1 - o0)) / max(t1 - t0, 1e-9))
