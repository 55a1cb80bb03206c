"""Our Caffe CPU patches (docker/patches/0007+) before and after, against PyTorch.

    python -m bench.before_after --before /path/to/unpatched/site-cpu
    python -m bench.before_after --before reference      # CAFFE_CPU_REFERENCE=1 instead
    python -m bench.before_after --models voc-fcn8s --sizes 500x500 --threads 2 --runs 1

For every model x input size x thread count, three children back to back:
Caffe "before", Caffe "after" (this environment's caffe) and PyTorch
(bench.torch_ref), each timing the forward (median of --runs after a
warm-up) and reporting its own peak RSS. "Before" is either an unpatched
pycaffe build -- a directory holding its `caffe` package, put first on the
child's PYTHONPATH, its libcaffe.so first on LD_LIBRARY_PATH (the child
reports which caffe and libcaffe it loaded) -- or
`reference`: this build with CAFFE_CPU_REFERENCE=1 (unpatched convolution
buffers and serial loops, but with the Crop fix of 0008). The SGEMM peak
(bench.peak) is measured once per thread count for the fraction-of-peak
columns, after the configurations; the table records the load average
before every configuration.
"""
import argparse
import datetime
import json
import os

from . import common, fcn_speed, peak

MODELS = ("voc-fcn8s", "voc-fcn-alexnet", "voc-fcn-googlenet")
SIZES = ("500x500", "1000x1000")
THREADS = (1, 2)


def before_env(before):
    """Child environment of the "before" build."""
    if before == "reference":
        return {"CAFFE_CPU_REFERENCE": "1"}
    site = os.path.abspath(before)
    if not os.path.isfile(os.path.join(site, "caffe", "__init__.py")):
        raise SystemExit(f"--before {before}: no caffe/__init__.py there "
                         "(expected a directory holding an unpatched pycaffe, e.g. .cache/caffe/site-cpu)")
    env = {"PYTHONPATH": os.pathsep.join([common.ROOT, site]), "CAFFE_CPU_REFERENCE": "0"}
    # _caffe.so finds libcaffe.so through its RUNPATH, whose first entry names
    # the tree it was built in; LD_LIBRARY_PATH goes first, so the copy's own
    # library (at $ORIGIN/../../build/lib, Caffe's layout) is the one loaded
    lib = os.path.join(os.path.realpath(os.path.join(site, "caffe")), "..", "..", "build", "lib")
    if os.path.isdir(lib):
        env["LD_LIBRARY_PATH"] = os.path.realpath(lib)
    return env


def caffe_child(model, size, runs, threads, env):
    return common.run_child("fcn_speed", [model, size, "fwd", runs],
                            env=dict(env, **common.thread_env(threads)))


def run(models, sizes, threads_list, runs, before, log=print):
    rows = []
    env_before = before_env(before)
    for model in models:
        for size in sizes:
            for threads in threads_list:
                load = os.getloadavg()[0]
                b = caffe_child(model, size, runs, threads, env_before)
                a = caffe_child(model, size, runs, threads, {"CAFFE_CPU_REFERENCE": "0"})
                t = common.run_child("torch_ref", [model, size, runs, threads],
                                     env=common.thread_env(threads))
                row = dict(model=fcn_speed.SHORT.get(model, model), size=size, threads=threads,
                           load=load, gflops={"before": b.get("gflops"), "after": a.get("gflops")},
                           before_ms=b.get("ms"), after_ms=a.get("ms"), torch_ms=t.get("ms"),
                           before_rss=b.get("peak_rss_mb"), after_rss=a.get("peak_rss_mb"),
                           torch_rss=t.get("peak_rss_mb"),
                           before_caffe=f"{b.get('caffe')} ({b.get('libcaffe')})",
                           after_caffe=f"{a.get('caffe')} ({a.get('libcaffe')})",
                           error="; ".join(x["error"] for x in (b, a, t) if "error" in x) or None)
                if row["after_ms"] and row["torch_ms"]:
                    row["after_ratio"] = row["after_ms"] / row["torch_ms"]
                if row["before_ms"] and row["torch_ms"]:
                    row["before_ratio"] = row["before_ms"] / row["torch_ms"]
                if row["after_rss"] and row["torch_rss"]:
                    row["rss_ratio"] = row["after_rss"] / row["torch_rss"]
                log(f"  {model} {size} {threads}t: before {row['before_ms']} after {row['after_ms']} "
                    f"torch {row['torch_ms']} ms" + (f" ({row['error']})" if row["error"] else ""))
                rows.append(row)
    # the SGEMM peak last, when the configurations are done (same machine state)
    peaks = {t: peak.best(peak.run([t], runs=5)[0]) for t in threads_list}
    log(f"SGEMM peak: {peaks}")
    for row in rows:
        row["peak"] = peaks[row["threads"]]
        for key, gflops in row["gflops"].items():
            if gflops and row["peak"]:
                row[key + "_peak"] = gflops / row["peak"]
    return rows


COLUMNS = [("model", "model", None), ("size", "input", None), ("threads", "threads", None),
           ("before_ms", "before ms", "{:.0f}"), ("after_ms", "after ms", "{:.0f}"),
           ("torch_ms", "PyTorch ms", "{:.0f}"),
           ("before_peak", "before of peak", "{:.0%}"), ("after_peak", "after of peak", "{:.0%}"),
           ("before_ratio", "before / PyTorch", "{:.2f}"), ("after_ratio", "after / PyTorch", "{:.2f}"),
           ("before_rss", "before RSS MiB", "{:.0f}"), ("after_rss", "after RSS MiB", "{:.0f}"),
           ("torch_rss", "PyTorch RSS MiB", "{:.0f}"), ("load", "load avg", "{:.2f}")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True,
                   help="directory holding an unpatched `caffe` package, or 'reference'")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--threads", default=",".join(map(str, THREADS)))
    p.add_argument("--runs", type=int, default=1, help="timed runs after one warm-up")
    p.add_argument("--no-save", action="store_true",
                   help="do not write bench/results/before-after-<host>-<date>.json")
    args = p.parse_args(argv)
    before_env(args.before)      # fail early on a bad --before
    host = common.host_info()
    others = common.OtherLoad()
    rows = run(args.models.split(","), args.sizes.split(","),
               [int(t) for t in args.threads.split(",")], args.runs, args.before)
    print(f"{host['host']} ({host['cpu']}, {host['cores']} cores), {host['date']}, "
          f"load average at start {host['loadavg'][0]:.2f}; before = {args.before}\n")
    print(common.markdown(rows, COLUMNS))
    peaks = {r["threads"]: r["peak"] for r in rows}
    print("\nSGEMM peak GFLOP/s: " + ", ".join(f"{t} thread(s) {g:.0f}" for t, g in peaks.items()))
    for key in ("before_caffe", "after_caffe"):
        print(f"Caffe {key[:-6]}: " + ", ".join(sorted({str(r[key]) for r in rows})))
    other = others.cores()
    print(f"Other processes kept {other:.2f} cores busy on average during the run.")
    if not args.no_save:
        os.makedirs(common.RESULTS, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
        path = os.path.join(common.RESULTS, f"before-after-{host['host']}-{stamp}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(dict(host=host, before=args.before, other_cores=other, rows=rows), f, indent=1)
        os.replace(path + ".tmp", path)
        print(f"wrote {os.path.relpath(path, common.ROOT)}")


if __name__ == "__main__":
    main()
