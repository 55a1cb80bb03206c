"""`python -m bench` (what `make bench` runs): every benchmark, Markdown tables,
and a JSON record in bench/results/<host>-<date>.json.

    python -m bench                  # full CPU run, ~12-15 min on 2 cores
    python -m bench --quick          # smoke run, ~2 min
    python -m bench --gpu 0          # GPU: peak (cuBLAS via Caffe) and FCN speed tables
    python -m bench --only peak,speed

Sections: peak (bench.peak), speed (bench.fcn_speed), torch
(bench.torch_ref), blas (bench.blas, writes results/blas-choice.json),
data (bench.data_layers, a colleague's module, run as it is when present).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

from . import blas, common, fcn_speed, peak, torch_ref

SECTIONS = ("peak", "speed", "torch", "blas", "data")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_data_layers(quick=False, timeout=900):
    """The data-path benchmark is its own module; run it as it is, keep its output."""
    cmd = [sys.executable, "-m", "bench.data_layers"] + (["--images", "8", "--iters", "8"] if quick else [])
    env = dict(os.environ, PYTHONPATH=common.ROOT)
    try:
        proc = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"python -m bench.data_layers timed out after {timeout} s")
    out = dict(returncode=proc.returncode, output=proc.stdout.strip())
    if proc.returncode:
        out["error"] = proc.stderr.strip()[-2000:]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small models and sizes, 1 run each")
    p.add_argument("--gpu", type=int, default=None, help="GPU id: Caffe GPU mode (peak, speed)")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma list of " + ",".join(SECTIONS))
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    only = set(args.only.split(","))
    if args.gpu is not None:
        only -= {"torch", "blas", "data"}     # CPU-only comparisons
    threads = common.N_CORES
    others = common.OtherLoad()
    record = dict(host=common.host_info(), command="python -m bench " + " ".join(argv or sys.argv[1:]),
                  blas=blas.system_state() if args.gpu is None else None)
    md = [f"# FCN benchmarks on {record['host']['host']} ({record['host']['cpu']}, "
          f"{threads} cores{'' if args.gpu is None else f', GPU {args.gpu}'}), "
          f"{record['host']['date']}", ""]
    if record["blas"]:
        md.append(f"Caffe's BLAS: `{record['blas']['caffe_resolves']['realpath']}`.\n")

    peak_all = None
    if "peak" in only or "speed" in only:
        log("peak: large SGEMM through Caffe's BLAS")
        counts = [threads] if args.gpu is not None else sorted({1, threads})
        rows = peak.run(counts, runs=3 if args.quick else 10, gpu=args.gpu)
        record["peak"] = rows
        peak_all = peak.best(rows[-1])
        md += ["## Attainable fp32 peak", "", common.markdown(rows, peak.COLUMNS), ""]

    if "speed" in only:
        log("speed: FCN forward / forward+backward, one child each")
        sargs = fcn_speed.parse_args((["--quick"] if args.quick else []) +
                                     ([] if args.gpu is None else ["--gpu", str(args.gpu)]))
        rows = fcn_speed.run(fcn_speed.configs_from(sargs), threads, args.gpu, log=log)
        fcn_speed.add_peak_fraction(rows, peak_all)
        record["speed"], record["gmac_check"] = rows, fcn_speed.check_gmac(rows)
        md += ["## FCN speed (pycaffe, batch 1, median ms per image)", "", fcn_speed.table(rows), ""]
        if record["gmac_check"]:
            c = record["gmac_check"]
            md.append(f"FCN-8s 500x500 forward: {c['gmac']:.1f} GMAC counted from the net's shapes vs "
                      f"{c['fact']:.0f} GMAC in the paper ({c['deviation']:+.1%}).\n")

    if "torch" in only:
        log("torch: the same nets in PyTorch")
        size = "256x256" if args.quick else torch_ref.SIZE
        models = ("voc-fcn8s", "voc-fcn-alexnet") if args.quick else torch_ref.MODELS
        rows = torch_ref.run(models, size, 1 if args.quick else 3, threads, log=log)
        record["torch"] = rows
        md += ["## Caffe vs PyTorch (CPU, same net, same weights)", "",
               common.markdown(rows, torch_ref.COLUMNS), ""]

    if "blas" in only:
        log("blas: every installed BLAS variant x {1, all} threads")
        fcn = ("voc-fcn8s", "256x256") if args.quick else blas.FCN
        state, rows, choice = blas.run(sorted({1, threads}), fcn, write=not args.quick, log=log)
        record["blas_variants"], record["blas_choice"] = rows, choice
        md += ["## BLAS variants (FCN forward per variant, own child, LD_LIBRARY_PATH)", "",
               common.markdown(rows, blas.COLUMNS), "",
               f"Fastest: {json.dumps(choice and {k: choice[k] for k in ('variant', 'threads', 'fcn_ms')})}"
               + ("" if args.quick else " (written to bench/results/blas-choice.json)"), ""]

    if "data" in only:
        log("data: bench.data_layers")
        record["data"] = d = run_data_layers(args.quick)
        md += ["## Data path (bench.data_layers)", "", "```",
               d.get("note") or d.get("output") or "", d.get("error", ""), "```", ""]
        # bench.data_layers prints its own table: images/s and the share of
        # each GPU-like step (20/50/100 ms) spent waiting on data, per loader.

    record["other_cores"] = others.cores()
    md.append(f"Other processes kept {record['other_cores']:.2f} of the {threads} cores busy on average "
              f"during this run (load average {record['host']['loadavg'][0]:.2f} at its start)"
              + ("; figures are pessimistic." if record["other_cores"] > 0.2 else "."))
    text = "\n".join(md)
    print(text)
    if not args.no_save:
        os.makedirs(common.RESULTS, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
        path = os.path.join(common.RESULTS, f"{record['host']['host']}-{stamp}.json")
        record["markdown"] = text
        with open(path, "w") as f:
            json.dump(record, f, indent=1, default=str)
        log(f"wrote {os.path.relpath(path, common.ROOT)}")


if __name__ == "__main__":
    main()
