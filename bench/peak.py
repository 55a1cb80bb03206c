"""Attainable fp32 GFLOP/s: a large SGEMM through the very BLAS Caffe links.

    python -m bench.peak                 # 1 core and all cores
    python -m bench.peak --threads 1,2 --n 3072
    python -m bench.peak --gpu 0         # cuBLAS through Caffe's InnerProduct

The library is the one `ldd` resolves for caffe's _caffe.so (libopenblas.so.0
-> Debian's openblas-pthread by default); cblas_sgemm is called on it through
ctypes. numpy is not used for this: its wheel bundles its own OpenBLAS
(numpy.libs/libopenblas64_*), a different build from the one Caffe runs on.
The same product through a one-layer Caffe InnerProduct net is printed
next to it as a cross-check (and is the only figure on a GPU: cuBLAS SGEMM
timed as Caffe's ForwardFromTo plus cudaDeviceSynchronize, the operands
already on the device and the product left there; no device-host copy is
timed). Peak means attainable: the best of the runs, not their median.
"""
import argparse
import ctypes

import numpy as np

from . import common

ROW_MAJOR, NO_TRANS = 101, 111
DEFAULT_N = 3072


def sgemm_gflops(lib_path, n, runs):
    """C = A B for n x n fp32 matrices via cblas_sgemm of `lib_path`."""
    lib = ctypes.CDLL(lib_path)
    f = lib.cblas_sgemm
    f.restype = None
    ptr = ctypes.POINTER(ctypes.c_float)
    i, fl = ctypes.c_int, ctypes.c_float
    f.argtypes = [i, i, i, i, i, i, fl, ptr, i, ptr, i, fl, ptr, i]
    rng = np.random.RandomState(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    c = np.zeros((n, n), np.float32)
    p = lambda x: x.ctypes.data_as(ptr)  # noqa: E731
    t = common.timeit(lambda: f(ROW_MAJOR, NO_TRANS, NO_TRANS, n, n, n, 1.0, p(a), n, p(b), n,
                                0.0, p(c), n), runs)
    assert np.allclose(c[:4, :4], a[:4] @ b[:, :4], rtol=1e-3, atol=1e-2), "sgemm result wrong"
    return 2 * n ** 3 / (t["min_ms"] / 1e3) / 1e9


def caffe_gflops(n, runs, gpu=None):
    """The same product as Caffe does it: an n x n InnerProduct on n rows."""
    from caffe import layers as L
    import caffe
    common.set_mode(gpu)
    spec = caffe.NetSpec()
    spec.data = L.Input(shape=dict(dim=[n, n]))
    spec.ip = L.InnerProduct(spec.data, num_output=n, bias_term=False,
                             weight_filler=dict(type="gaussian", std=0.01))
    net = common.load_net(spec.to_proto())
    a = np.random.RandomState(0).standard_normal((n, n)).astype(np.float32)
    net.blobs["data"].data[...] = a
    # Only the GEMM: after the first call A and W stay on the device and the
    # product is not copied back (see common.pass_fn); then one check.
    t = common.timeit(common.pass_fn(net, gpu), runs)
    w = net.params["ip"][0].data
    assert np.allclose(net.blobs["ip"].data[:4, :4], a[:4] @ w[:4].T, rtol=1e-3, atol=1e-3), \
        "InnerProduct result wrong"
    return 2 * n ** 3 / (t["min_ms"] / 1e3) / 1e9


def numpy_blas():
    """The BLAS numpy itself is linked to (for the record: not Caffe's)."""
    np.dot(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))
    with open("/proc/self/maps") as f:
        libs = {l.split()[-1] for l in f if "numpy.libs" in l and "blas" in l}
    return sorted(libs)


def measure(n, runs, gpu=None):
    """One child's figures (threads come from its environment)."""
    out = dict(n=n, device="cpu" if gpu is None else f"gpu{gpu}")
    if gpu is None:
        blas = common.caffe_blas()
        out.update(blas=common.blas_variant(blas["realpath"]), blas_path=blas["realpath"],
                   sgemm_gflops=sgemm_gflops(blas["path"], n, runs), numpy_blas=numpy_blas())
    out["caffe_gflops"] = caffe_gflops(n, runs, gpu)
    out["loaded_blas"] = common.loaded_blas()
    return out


def run(threads_list, n=DEFAULT_N, runs=5, gpu=None, env=None, timeout=900, python=None):
    """[{threads, sgemm_gflops, caffe_gflops, ...}], one child per thread count
    (`python`: the interpreter whose caffe and BLAS to measure)."""
    rows = []
    for t in threads_list:
        r = common.run_child("peak", [n, runs] + ([] if gpu is None else ["--gpu", gpu]),
                             env=dict(env or {}, **common.thread_env(t)), timeout=timeout,
                             python=python)
        r["threads"] = t
        rows.append(r)
    return rows


def best(row):
    """The figure that counts as `peak`: ctypes SGEMM on CPU, Caffe's on GPU."""
    return row.get("sgemm_gflops") or row.get("caffe_gflops")


def reference(threads=None, gpu=None, n=DEFAULT_N, runs=8):
    """Peak GFLOP/s at `threads` (default all cores) for fraction-of-peak columns."""
    return best(run([threads or common.N_CORES], n, runs, gpu)[0])


COLUMNS = [("threads", "threads", None), ("blas", "BLAS (what caffe resolves)", None),
           ("sgemm_gflops", "cblas_sgemm GFLOP/s", "{:.1f}"),
           ("caffe_gflops", "Caffe InnerProduct GFLOP/s", "{:.1f}"), ("n", "n", None)]


def parse_threads(text):
    return [common.N_CORES if t == "all" else int(t) for t in text.split(",")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("config", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--threads", default="1,all", help="comma list; 'all' = every core")
    p.add_argument("--n", type=int, default=DEFAULT_N, help="matrix size")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--gpu", type=int, default=None)
    args = p.parse_args(argv)
    if args.child:
        n, runs = map(int, args.config)
        common.emit(measure(n, runs, args.gpu))
        return
    threads = parse_threads(args.threads) if args.gpu is None else [common.N_CORES]
    rows = run(threads, args.n, args.runs, args.gpu)
    print(common.markdown(rows, COLUMNS))
    for r in rows:
        if "error" in r:
            print(f"threads={r['threads']}: {r['error']}")
    if rows and "numpy_blas" in rows[0]:
        print(f"\ncaffe's BLAS: {rows[0]['blas_path']}; numpy's own: {rows[0]['numpy_blas']} "
              "(a different library, hence ctypes)")


if __name__ == "__main__":
    main()
