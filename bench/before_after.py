"""Caffe's CPU convolution engines before and after, against PyTorch and
onnxruntime, in one run.

    python -m bench.before_after                     # im2col vs oneDNN (if built), PyTorch, onnxruntime
    python -m bench.before_after --caffe-python /path/to/.venv/bin/python
    python -m bench.before_after --before reference  # CAFFE_CPU_REFERENCE=1 as "before"
    python -m bench.before_after --before /path/to/unpatched/site-cpu
    python -m bench.before_after --quick             # tiny sizes, 1 thread count, 1 run

For every model x input size x thread count x pass (fwd; fwdbwd at
--fwdbwd-sizes), back-to-back children, each timing the pass (median of
--runs after a warm-up) and reporting its own peak RSS:

- Caffe "before": by default the same build with CAFFE_CPU_CONV=im2col
  (patches 0007-0009's im2col + GEMM); `--before reference` the unpatched
  BVLC code paths of that build (CAFFE_CPU_REFERENCE=1); `--before DIR` an
  unpatched pycaffe (a directory holding its `caffe` package, put first on
  the child's PYTHONPATH, its libcaffe.so first on LD_LIBRARY_PATH);
- Caffe "after": the build's default engine, oneDNN where the build links
  libdnnl. With `--before im2col` and a build without oneDNN the column
  would repeat "before", so it is not run and the run says so;
- PyTorch (bench.torch_ref; fwdbwd: the same loss and weight gradients);
- onnxruntime on our own ONNX export (bench.ort_ref; forward only).

Every Caffe row records the engine its child really ran (bench.engine:
libdnnl in `ldd` of caffe's _caffe.so, and the switches in its environment).
`--caffe-python` runs the Caffe children (and the SGEMM peak) with another
interpreter whose caffe is used, e.g. a oneDNN build's .venv/bin/python.
The SGEMM peak (bench.peak, the BLAS caffe links) is measured once per
thread count after the configurations; fractions of peak divide each
column's GFLOP/s (the Caffe net's own MAC count, bench.flops) by it.
The load average is recorded before every configuration, the CPU model and
its vector ISA (AVX2 / AVX-512) at the top and in the JSON record.
"""
import argparse
import datetime
import json
import os
import sys
import time

from common.atomic import atomic_write

from . import common, engine, fcn_speed, flops, peak

MODELS = ("voc-fcn8s", "voc-fcn-alexnet", "voc-fcn-googlenet")
SIZES = ("500x500", "1000x1000")
FWDBWD_SIZES = ("500x500",)
THREADS = (1, 2)
MODES = ("fwd", "fwdbwd")
QUICK = dict(sizes="96x96", fwdbwd_sizes="96x96", runs=1, peak_n=768)
COLUMN_KEYS = ("before", "after", "torch", "ort")


def before_env(before):
    """Child environment of the "before" Caffe."""
    if before == "reference":
        return {"CAFFE_CPU_REFERENCE": "1"}
    if before == "im2col":
        return engine.env_for("im2col")
    site = os.path.abspath(before)
    if not os.path.isfile(os.path.join(site, "caffe", "__init__.py")):
        raise SystemExit(f"--before {before}: no caffe/__init__.py there (expected 'im2col', "
                         "'reference' or a directory holding an unpatched pycaffe, e.g. .cache/caffe/site-cpu)")
    env = {"PYTHONPATH": os.pathsep.join([common.ROOT, site]), "CAFFE_CPU_REFERENCE": "0"}
    # _caffe.so finds libcaffe.so through its RUNPATH, whose first entry names
    # the tree it was built in; LD_LIBRARY_PATH goes first, so the copy's own
    # library (at $ORIGIN/../../build/lib, Caffe's layout) is the one loaded
    lib = os.path.join(os.path.realpath(os.path.join(site, "caffe")), "..", "..", "build", "lib")
    if os.path.isdir(lib):
        env["LD_LIBRARY_PATH"] = os.path.realpath(lib)
    return env


def plan(models, sizes, fwdbwd_sizes, threads_list, modes):
    """[(model, size, threads, mode)]: forward at every size, fwdbwd at fwdbwd_sizes."""
    return [(m, s, t, mode) for m in models for mode in modes
            for s in (sizes if mode == "fwd" else fwdbwd_sizes) for t in threads_list]


def measure_row(model, size, threads, mode, runs, env_before, env_after, caffe_python):
    """One configuration: its children back to back, merged into one row."""
    threads_env = common.thread_env(threads)
    caffe = lambda env: common.run_child("fcn_speed", [model, size, mode, runs],  # noqa: E731
                                         env=dict(env, **threads_env), python=caffe_python)
    row = dict(model=fcn_speed.SHORT.get(model, model), model_name=model, size=size,
               threads=threads, mode=mode, load=os.getloadavg()[0])
    results = dict(before=caffe(env_before),
                   after=caffe(env_after) if env_after is not None else None,
                   torch=common.run_child("torch_ref", [model, size, runs, threads, mode],
                                          env=threads_env),
                   ort=common.run_child("ort_ref", [model, size, runs, threads, 0], env=threads_env)
                   if mode == "fwd" else None)
    gmac = results["before"].get("gmac") or (results["after"] or {}).get("gmac")
    row["gmac"] = gmac
    errors = []
    for key, r in results.items():
        if r is None:
            continue
        if "error" in r:
            errors.append(f"{key}: {r['error']}")
            continue
        row[f"{key}_ms"], row[f"{key}_rss"] = r["ms"], r["peak_rss_mb"]
        if key in ("before", "after"):
            row[f"{key}_engine"] = r.get("engine")
            row[f"{key}_caffe"] = f"{r.get('caffe')} ({r.get('libcaffe')})"
        if gmac:
            row[f"{key}_gflops"] = flops.rate(gmac, r["ms"])
    for caffe_key in ("before", "after"):
        for peer in ("torch", "ort"):
            if row.get(f"{caffe_key}_ms") and row.get(f"{peer}_ms"):
                row[f"{caffe_key}_{peer}"] = row[f"{caffe_key}_ms"] / row[f"{peer}_ms"]
    row["error"] = "; ".join(errors) or None
    return row


def add_peaks(rows, peaks):
    """Fraction of the SGEMM peak of every column's GFLOP/s."""
    for row in rows:
        row["peak"] = peaks.get(row["threads"])
        for key in COLUMN_KEYS:
            if row.get(f"{key}_gflops") and row["peak"]:
                row[f"{key}_peak"] = row[f"{key}_gflops"] / row["peak"]


def log_line(text):
    print(text, flush=True)         # progress shows while a long run's output is redirected


def run(configs, runs, env_before, env_after, caffe_python=None, peak_n=peak.DEFAULT_N,
        log=log_line):
    rows = []
    for model, size, threads, mode in configs:
        row = measure_row(model, size, threads, mode, runs, env_before, env_after, caffe_python)
        log(f"  {model} {size} {threads}t {mode}: " + ", ".join(
            f"{key} {row[key + '_ms']:.0f}" for key in COLUMN_KEYS if row.get(key + "_ms"))
            + " ms" + (f" ({row['error']})" if row["error"] else ""))
        rows.append(row)
    # the SGEMM peak last, when the configurations are done (same machine state)
    threads_list = sorted({r["threads"] for r in rows})
    peaks = {t: peak.best(r) for t, r in
             zip(threads_list, peak.run(threads_list, n=peak_n, runs=5, python=caffe_python))}
    log(f"SGEMM peak GFLOP/s: {peaks}")
    add_peaks(rows, peaks)
    return rows, peaks


def columns(labels):
    """The two Markdown tables' columns: times and ratios; peak and memory."""
    head = [("model", "model", None), ("size", "input", None), ("threads", "threads", None),
            ("mode", "pass", None)]
    times = head + [(f"{k}_ms", f"{labels[k]} ms", "{:.0f}") for k in COLUMN_KEYS] + [
        (f"{c}_{p}", f"{labels[c]} / {labels[p]}", "{:.2f}")
        for p in ("torch", "ort") for c in ("before", "after")]
    memory = head + [(f"{k}_peak", f"{labels[k]} of peak", "{:.0%}") for k in COLUMN_KEYS] + [
        (f"{k}_rss", f"{labels[k]} RSS MiB", "{:.0f}") for k in COLUMN_KEYS] + [
        ("load", "load avg", "{:.2f}")]
    return times, memory


def present(rows, cols):
    """Only the columns some row has a value for (a column not run is left out)."""
    return [c for c in cols if any(r.get(c[0]) is not None for r in rows)]


def labels_for(before, onednn):
    return dict(before={"im2col": "im2col", "reference": "reference"}.get(before, "before"),
                after="oneDNN" if onednn else "im2col", torch="PyTorch", ort="onnxruntime")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", default="im2col",
                   help="'im2col' (CAFFE_CPU_CONV=im2col, default), 'reference' "
                        "(CAFFE_CPU_REFERENCE=1) or a directory holding an unpatched caffe package")
    p.add_argument("--caffe-python", default=None,
                   help="interpreter for the Caffe children (e.g. a oneDNN build's .venv/bin/python)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--sizes", default=",".join(SIZES), help="HxW list for forward")
    p.add_argument("--fwdbwd-sizes", default=",".join(FWDBWD_SIZES),
                   help="HxW list for forward+backward")
    p.add_argument("--threads", default=",".join(map(str, THREADS)))
    p.add_argument("--modes", default=",".join(MODES), help="fwd, fwdbwd or both")
    p.add_argument("--runs", type=int, default=1, help="timed runs after one warm-up")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['sizes']} forward and forward+backward, 1 run")
    p.add_argument("--out", default=None,
                   help="JSON record to write (default bench/results/before-after-<host>-<date>.json)")
    p.add_argument("--no-save", action="store_true", help="write no JSON record")
    args = p.parse_args(argv)
    args.peak_n = peak.DEFAULT_N
    if args.quick:
        args.sizes, args.fwdbwd_sizes, args.runs, args.peak_n = (
            QUICK["sizes"], QUICK["fwdbwd_sizes"], QUICK["runs"], QUICK["peak_n"])
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    args.models, args.sizes, args.fwdbwd_sizes, args.modes = (
        split(args.models), split(args.sizes), split(args.fwdbwd_sizes), split(args.modes))
    try:
        args.threads = [int(t) for t in split(args.threads)]
        for size in args.sizes + args.fwdbwd_sizes:
            common.parse_size(size)
    except ValueError as exc:
        p.error(f"--threads/--sizes: {exc} (expected e.g. --threads 1,2 --sizes 500x500)")
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        p.error(f"--modes {','.join(args.modes)}: expected fwd, fwdbwd or fwd,fwdbwd")
    if args.caffe_python and not os.access(args.caffe_python, os.X_OK):
        p.error(f"--caffe-python {args.caffe_python}: not an executable")
    args.parser = p
    return args


def main(argv=None):
    args = parse_args(argv)
    before_env(args.before)      # fail early on a bad --before
    started = time.monotonic()
    cpu = engine.this_cpu()
    host = dict(common.host_info(), isa=cpu["isa"])
    probe = engine.probe(args.caffe_python)
    if "error" in probe:
        args.parser.error(f"cannot import caffe with {args.caffe_python or sys.executable}: "
                          f"{probe['error']}")
    onednn = probe["engine"] == "onednn"
    env_after = engine.env_for("onednn") if onednn or args.before != "im2col" else None
    print(f"{host['host']}: {cpu['model']}, ISA {cpu['isa']}, "
          f"{host['cores']} cores; {host['date']}; load average at start {host['loadavg'][0]:.2f}")
    print(f"Caffe: {probe['caffe']} ({args.caffe_python or sys.executable}); "
          + (f"oneDNN: {probe['libdnnl']}" if onednn else
             "no oneDNN in this build (ldd of _caffe.so shows no libdnnl): its convolutions run im2col"
             + ("; the 'after' column is not run (it would repeat im2col)" if env_after is None else "")))
    others = common.OtherLoad()
    configs = plan(args.models, args.sizes, args.fwdbwd_sizes, args.threads, args.modes)
    rows, peaks = run(configs, args.runs, before_env(args.before), env_after, args.caffe_python,
                      args.peak_n)
    labels = labels_for(args.before, onednn)
    times, memory = columns(labels)
    print()
    print(common.markdown(rows, present(rows, times)))
    print()
    print(common.markdown(rows, present(rows, memory)))
    print("\nSGEMM peak GFLOP/s: " + ", ".join(f"{t} thread(s) {g:.0f}" if g else f"{t}: failed"
                                               for t, g in peaks.items()))
    for key in ("before", "after"):
        engines = sorted({str(r.get(f"{key}_engine")) for r in rows if r.get(f"{key}_ms")})
        caffes = sorted({str(r.get(f"{key}_caffe")) for r in rows if r.get(f"{key}_ms")})
        if engines:
            print(f"Caffe {key} ({labels[key]}): engine {', '.join(engines)}; {', '.join(caffes)}")
    for r in rows:
        if r["error"]:
            print(f"{r['model']} {r['size']} {r['threads']}t {r['mode']}: failed: {r['error']}")
    other = others.cores()
    minutes = (time.monotonic() - started) / 60
    print(f"Other processes kept {other:.2f} cores busy on average during the run "
          f"({minutes:.1f} min; load average at the end {os.getloadavg()[0]:.2f}).")
    if args.no_save:
        return
    path = args.out or os.path.join(common.RESULTS, "before-after-{}-{}.json".format(
        host["host"], datetime.datetime.now().strftime("%Y%m%d-%H%M")))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    record = dict(host=host, cpu=cpu, command="python -m bench.before_after " + " ".join(
        sys.argv[1:] if argv is None else argv), before=args.before, caffe_python=args.caffe_python,
        caffe=probe, labels=labels, peaks=peaks, other_cores=other, minutes=minutes,
        loadavg_end=os.getloadavg(), rows=rows)
    atomic_write(path, json.dumps(record, indent=1))
    print(f"wrote {os.path.relpath(path, common.ROOT)}")


if __name__ == "__main__":
    main()
