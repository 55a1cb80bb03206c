"""Which BLAS, with how many threads, should Caffe run on here?

    python -m bench.blas                 # measure every installed variant, write results/blas-choice.json
    python -m bench.blas --list          # what is installed and what caffe resolves, no timing
    python -m bench.blas --apply         # `export ...` lines of the chosen setup (eval "$(...)")
    python -m bench.blas --apply --format make   # the same as Makefile `export VAR := value` lines

Caffe's libcaffe.so needs libopenblas.so.0 (RUNPATH, not RPATH, so
LD_LIBRARY_PATH wins over the system path). Debian ships that soname as
/usr/lib/x86_64-linux-gnu/openblas-{pthread,openmp}/ and BLIS as
blis-{pthread,openmp}/libblis.so.4 (a complete CBLAS). A variant is
selected per child process by putting a directory that holds a
libopenblas.so.0 first on LD_LIBRARY_PATH: the Debian directory itself for
OpenBLAS, a one-symlink shim directory (.cache/bench/blas/<variant>/) for
BLIS. The system default (update-alternatives) is never touched. Each child
reports the library it really loaded (/proc/self/maps), so a variant that
did not take effect is flagged rather than silently measured as another.
"""
import argparse
import json
import os
import subprocess
import sys

from . import common, fcn_speed, peak

LIBDIR = "/usr/lib/x86_64-linux-gnu"
VARIANTS = ("openblas-pthread", "openblas-openmp", "blis-pthread", "blis-openmp")
SHIM_ROOT = os.path.join(common.ROOT, ".cache", "bench", "blas")
CHOICE = os.path.join(common.RESULTS, "blas-choice.json")
FCN = ("voc-fcn8s", "500x500")


def library(variant):
    """The variant's shared library file, or None if its package is missing."""
    name = "libopenblas.so.0" if variant.startswith("openblas") else "libblis.so.4"
    path = os.path.join(LIBDIR, variant, name)
    return path if os.path.exists(path) else None


def libdir(variant):
    """A directory whose libopenblas.so.0 is the variant (made for BLIS)."""
    lib = library(variant)
    if variant.startswith("openblas"):
        return os.path.dirname(lib)
    shim = os.path.join(SHIM_ROOT, variant)
    os.makedirs(shim, exist_ok=True)
    link = os.path.join(shim, "libopenblas.so.0")
    if os.path.realpath(link) != os.path.realpath(lib):
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(lib, link)
    return shim


def installed():
    """{variant: library} of the Debian BLAS packages present."""
    return {v: library(v) for v in VARIANTS if library(v)}


def system_state():
    """dpkg packages, update-alternatives and what caffe resolves, as text."""
    def sh(cmd):
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip()
    return dict(
        packages=sh("dpkg -l | awk '/^ii/ && /openblas|blis|libblas3/ {print $2, $3}'").splitlines(),
        alternatives=sh("update-alternatives --query libopenblas.so.0-x86_64-linux-gnu | "
                        "grep -E '^(Value|Best):'").splitlines(),
        caffe_resolves=common.caffe_blas())


def variant_env(variant, threads):
    env = common.thread_env(threads)
    env["LD_LIBRARY_PATH"] = libdir(variant) + (os.pathsep + os.environ["LD_LIBRARY_PATH"]
                                                if os.environ.get("LD_LIBRARY_PATH") else "")
    return env


def measure(variants, threads_list, fcn=FCN, runs=1, log=print):
    """Per (variant, threads): SGEMM peak and an FCN forward, each in a child."""
    rows = []
    for variant in variants:
        expect = os.path.realpath(library(variant))
        for threads in threads_list:
            env = variant_env(variant, threads)
            g = peak.run([threads], runs=3, env=env)[0]
            f = fcn_speed.run([(fcn[0], fcn[1], "fwd", runs)], threads, env=env, log=lambda *_: None)[0]
            row = dict(variant=variant, threads=threads, sgemm_gflops=g.get("sgemm_gflops"),
                       fcn_ms=f.get("ms"), fcn_gflops=f.get("gflops"), fcn=" ".join(fcn),
                       error=g.get("error") or f.get("error"))
            loaded = g.get("loaded_blas", [])
            row["applied"] = expect in loaded and g.get("blas_path") == expect
            if not row["applied"] and not row["error"]:
                row["error"] = f"loaded {loaded}, expected {expect}"
            log(f"  {variant} x{threads}: " + (row["error"] or
                f"sgemm {row['sgemm_gflops']:.0f} GFLOP/s, FCN {row['fcn_ms']:.0f} ms"))
            rows.append(row)
    return rows


def choose(rows, default_variant):
    """The fastest FCN forward; ties (within 5%, about the run-to-run noise
    here) go to the system default, then to fewer threads, so a change of
    library needs a real gain."""
    ok = [r for r in rows if r.get("fcn_ms") and r["applied"]]
    if not ok:
        return None
    fastest = min(r["fcn_ms"] for r in ok)
    near = [r for r in ok if r["fcn_ms"] <= fastest * 1.05]
    best = min(near, key=lambda r: (r["variant"] != default_variant, r["threads"], r["fcn_ms"]))
    return dict(variant=best["variant"], threads=best["threads"], fcn_ms=best["fcn_ms"],
                sgemm_gflops=best["sgemm_gflops"], fcn=best["fcn"],
                system_default=best["variant"] == default_variant,
                measured=common.host_info())


def write_choice(choice):
    os.makedirs(common.RESULTS, exist_ok=True)
    with open(CHOICE, "w") as f:
        json.dump(choice, f, indent=2)
        f.write("\n")


def apply_lines(fmt="sh"):
    """Environment lines of the chosen setup; without a choice file, all cores
    on the system default (a note goes to stderr). A choice of all cores
    means all cores of the host it is applied on."""
    choice = None
    if os.path.exists(CHOICE):
        with open(CHOICE) as f:
            choice = json.load(f)
    else:
        print(f"# {os.path.relpath(CHOICE, common.ROOT)} missing (run python -m bench.blas): "
              "defaults", file=sys.stderr)
    threads = common.N_CORES
    if choice and choice["threads"] < choice["measured"]["cores"]:
        threads = min(choice["threads"], common.N_CORES)   # "all cores" stays all on any host
    env = common.thread_env(threads)
    if choice and not choice["system_default"] and library(choice["variant"]):
        env["LD_LIBRARY_PATH"] = libdir(choice["variant"])
    line = "export {}={}" if fmt == "sh" else "export {} := {}"
    return [line.format(k, v) for k, v in sorted(env.items())]


COLUMNS = [("variant", "BLAS", None), ("threads", "threads", None),
           ("sgemm_gflops", "sgemm GFLOP/s", "{:.1f}"), ("fcn", "FCN forward", None),
           ("fcn_ms", "ms", "{:.0f}"), ("fcn_gflops", "GFLOP/s", "{:.1f}"),
           ("applied", "loaded as asked", None)]


def run(threads_list=None, fcn=FCN, runs=2, write=True, log=print):
    """Measure all installed variants and (if `write`) store the choice;
    returns (state, rows, choice)."""
    state = system_state()
    default = common.blas_variant(state["caffe_resolves"]["realpath"])
    rows = measure(list(installed()), threads_list or sorted({1, common.N_CORES}), fcn, runs, log)
    choice = choose(rows, default)
    if choice and write:
        write_choice(choice)
    return state, rows, choice


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--list", action="store_true")
    p.add_argument("--apply", action="store_true")
    p.add_argument("--format", choices=("sh", "make"), default="sh")
    p.add_argument("--threads", default="1,all")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--fcn", default=" ".join(FCN), help="model and size timed per variant")
    args = p.parse_args(argv)
    if args.apply:
        print("\n".join(apply_lines(args.format)))
        return
    if args.list:
        print(json.dumps(dict(system_state(), installed=installed()), indent=2))
        return
    fcn = tuple(args.fcn.split())
    state, rows, choice = run(peak.parse_threads(args.threads), fcn, args.runs, write=fcn == FCN)
    print(json.dumps(state, indent=2))
    print(common.markdown(rows, COLUMNS))
    print("\nchoice:", json.dumps(choice))


if __name__ == "__main__":
    main()
