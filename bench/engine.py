"""What really ran a benchmark's convolutions: the CPU's vector ISA and the
CPU convolution engine a Caffe build selects.

A Caffe built with oneDNN (libdnnl among the libraries `ldd` resolves for
_caffe.so, common.caffe_library) runs its CPU Convolution/Deconvolution
through oneDNN unless CAFFE_CPU_CONV=im2col (patches 0007-0009's im2col +
GEMM) or CAFFE_CPU_REFERENCE=1 (the unpatched BVLC path); a build without
oneDNN ignores CAFFE_CPU_CONV and runs im2col. Every timing child records
`current()`, so a row says which engine it measured, not which was asked for.

    python -m bench.engine             # this machine's CPU and this build's engine
"""
import os

from . import common

ENGINES = ("im2col", "onednn")


def cpu(cpuinfo_text):
    """{model, isa, flags} from /proc/cpuinfo's text: isa is the widest vector
    extension oneDNN and OpenBLAS can use, "AVX-512" (avx512f), "AVX2"
    (avx2 and fma), "AVX", "SSE4.1" or "none"."""
    model, flags = None, set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    if "avx512f" in flags:
        isa = "AVX-512"
    elif {"avx2", "fma"} <= flags:
        isa = "AVX2"
    elif "avx" in flags:
        isa = "AVX"
    elif "sse4_1" in flags:
        isa = "SSE4.1"
    else:
        isa = "none"
    vector = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx")))
    return dict(model=model, isa=isa, flags=vector)


def this_cpu(path="/proc/cpuinfo"):
    with open(path) as f:
        return cpu(f.read())


def selected(environ, has_onednn):
    """The engine a Caffe build with (`has_onednn`) or without oneDNN runs
    under the environment `environ`: "reference", "im2col" or "onednn"."""
    if environ.get("CAFFE_CPU_REFERENCE") == "1":
        return "reference"
    if has_onednn and environ.get("CAFFE_CPU_CONV") != "im2col":
        return "onednn"
    return "im2col"


def env_for(engine):
    """Child environment that selects `engine` (im2col or onednn) in a patched
    build; None removes a variable (common.run_child)."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    return {"CAFFE_CPU_REFERENCE": "0", "CAFFE_CPU_CONV": "im2col" if engine == "im2col" else None}


def onednn_library():
    """Real path of the libdnnl this environment's caffe links, or None."""
    found = common.caffe_library("libdnnl")
    return found and found["realpath"]


def current():
    """{engine, libdnnl} of this process's caffe under this environment."""
    lib = onednn_library()
    return dict(engine=selected(os.environ, lib is not None), libdnnl=lib)


def probe(python=None, env=None):
    """current() of another interpreter / environment, from a child:
    {engine, libdnnl, caffe} or {error}."""
    return common.run_child("engine", [], env=env, python=python, timeout=300)


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        import caffe
        common.emit(dict(current(), caffe=os.path.dirname(caffe.__file__)))
        return
    c = this_cpu()
    e = current()
    print(f"CPU: {c['model']} ({c['isa']}); Caffe convolution engine: {e['engine']}"
          + (f" ({e['libdnnl']})" if e["libdnnl"] else " (no oneDNN in this build)"))


if __name__ == "__main__":
    main()
