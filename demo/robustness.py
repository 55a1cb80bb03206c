"""Is the demo's outcome robust? Run it over BLAS thread counts and seeds.

    python -m demo.robustness [--threads 1,2] [--seeds 1337,1338,1339]
                              [--out runs/robustness] [--jobs 1] [--reuse] [--readme]

Each (threads, seed) pair is one full `python -m demo --seed S` in its own
process with every BLAS runtime pinned to that many threads (summation
order changes with the thread count). The table of mean IU per stage, the
range and spread of each stage and the demo's targets (FCN-8s >= 0.60,
FCN-8s >= FCN-32s + 0.15 in every run, spread <= 0.05 per stage) go to
OUT/robustness.md and OUT/robustness.json, stamped with date and machine.
--jobs N runs N demos at once: the scores do not change, the times do (each
run then shares the cores; the table says how many ran at once).

--reuse --finished-only reports only the runs already finished (when the
grid could not finish in time): the missing runs are named and the targets
count as missed.

--readme also rewrites the README's demo results (between the
`demo-results` markers) from this grid and copies the reference run's
(2 threads, seed 1337: what `make demo` does after `make install`)
predictions to docs/demo-predictions.png: the README's numbers and picture
always come from this command. Exit 1 when a target is missed.
"""
import argparse
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys
import threading
import time

from common.report import host_info, markdown, thread_env
from common.atomic import atomic_write
from common.seed import SEED

from .check import stage_mean_ius

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("fcn32s", "fcn16s", "fcn8s")
TARGETS = dict(min_fcn8s=0.60, min_gain=0.15, max_spread=0.05)
REFERENCE = (2, SEED)                 # make install's default BLAS threads, the default seed
README_BEGIN = "<!-- demo-results:begin (written by python -m demo.robustness --readme) -->"
README_END = "<!-- demo-results:end -->"


def run_one(out, threads, seed, quick, log):
    """One demo run (or its earlier results with --reuse); returns results.json's content."""
    cmd = [sys.executable, "-m", "demo", "--out", out, "--seed", str(seed)] + (["--quick"] if quick else [])
    env = dict(os.environ, PYTHONPATH=ROOT, **thread_env(threads))
    log(f"[robustness] threads {threads} seed {seed}: {' '.join(cmd[1:])} (log {out}.log)")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".log", "w") as f:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"demo run threads {threads} seed {seed} exited {code}; see {out}.log")
    return load(out)


def load(out):
    path = os.path.join(out, "results.json")
    with open(path) as f:
        results = json.load(f)
    stage_mean_ius(results, path)       # a clear error if it is not a demo result
    return results


def summarise(rows):
    """Range and spread per stage and whether each target holds."""
    summary = {}
    for stage in STAGES:
        values = [r[stage] for r in rows]
        summary[stage] = dict(min=min(values), max=max(values), spread=max(values) - min(values))
    gains = [r["gain"] for r in rows]
    summary["gain"] = dict(min=min(gains), max=max(gains), spread=max(gains) - min(gains))
    checks = {
        f"FCN-8s mean IU >= {TARGETS['min_fcn8s']:.2f} in every run":
            summary["fcn8s"]["min"] >= TARGETS["min_fcn8s"],
        f"FCN-8s >= FCN-32s + {TARGETS['min_gain']:.2f} in every run":
            summary["gain"]["min"] >= TARGETS["min_gain"],
        f"spread of each stage's mean IU <= {TARGETS['max_spread']:.2f}":
            all(summary[s]["spread"] <= TARGETS["max_spread"] for s in STAGES),
    }
    return summary, checks


def report(rows, summary, checks, machine, command, jobs=1, note=None):
    columns = [("threads", "BLAS threads", None), ("seed", "seed", None),
               ("fcn32s", "FCN-32s", "{:.3f}"), ("fcn16s", "FCN-16s", "{:.3f}"),
               ("fcn8s", "FCN-8s", "{:.3f}"), ("gain", "FCN-8s − FCN-32s", "{:+.3f}"),
               ("seconds", "time (s)", "{:.0f}")]
    lines = [f"Demo robustness grid, {machine['date']} on {machine['cpu']} "
             f"({machine['cores']} cores, load average at the end "
             f"{', '.join(f'{x:.1f}' for x in machine['loadavg'])}; "
             f"{'runs read back from earlier invocations' if jobs is None else 'one run at a time' if jobs == 1 else f'{jobs} runs at a time'}); `{command}`:", "",
             markdown(rows, columns)]
    lines += ["| range | | " + " | ".join(
        f"{summary[k]['min']:.3f}–{summary[k]['max']:.3f}" for k in STAGES)
        + f" | {summary['gain']['min']:+.3f}–{summary['gain']['max']:+.3f} | |"]
    lines += ["| spread | | " + " | ".join(f"{summary[k]['spread']:.3f}" for k in STAGES) + " | | |"]
    lines += [""] + [f"- {'met' if ok else 'MISSED'}: {name}" for name, ok in checks.items()]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def reference_section(results, grid_md, summary):
    """The README's demo results: the range over the grid, the reference
    run's full table, then the grid."""
    threads, seed = REFERENCE
    span = lambda k: f"{summary[k]['min']:.2f}–{summary[k]['max']:.2f}"  # noqa: E731
    ranges = (f"Over the grid below, mean IU ranges over FCN-32s {span('fcn32s')}, FCN-16s "
              f"{span('fcn16s')}, FCN-8s {span('fcn8s')}; FCN-8s beats FCN-32s by "
              f"{summary['gain']['min']:.2f}–{summary['gain']['max']:.2f}.")
    s, secs = results["stages"], results.get("seconds", {})
    rows = [dict(stage=name, **{k: s[key][k] for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")},
                 seconds=secs.get(key)) for key, name in zip(STAGES, ("FCN-32s", "FCN-16s", "FCN-8s"))]
    table = markdown(rows, [("stage", "stage", None), ("pixel_acc", "pixel acc", "{:.3f}"),
                            ("mean_acc", "mean acc", "{:.3f}"), ("mean_iu", "mean IU", "{:.3f}"),
                            ("fw_iu", "fwIU", "{:.3f}"), ("seconds", "time (s)", "{:.0f}")])
    table += f"\n| chance (all background) | | | {results['chance_mean_iu']:.3f} | | |"
    pre = secs.get("classifier")
    return "\n".join([
        ranges, "",
        f"The reference run ({threads} BLAS threads as `make install` sets on 2 cores, seed {seed}; "
        f"{secs.get('total', 0) / 60:.1f} minutes in all, of which classifier pre-training "
        f"{pre:.0f} s):" if pre is not None else "The reference run:", "",
        table, "", grid_md.rstrip()])


def update_readme(readme, section):
    with open(readme) as f:
        text = f.read()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme}: the markers {README_BEGIN!r} and {README_END!r} are missing")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write(readme, head + README_BEGIN + "\n" + section + "\n" + README_END + tail)


def parse_ints(text, flag):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{flag}: expected comma-separated positive integers, got {text!r}")
    return values


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m demo.robustness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", type=lambda t: parse_ints(t, "--threads"))
    parser.add_argument("--seeds", default=f"{SEED},{SEED + 1},{SEED + 2}",
                        type=lambda t: parse_ints(t, "--seeds"))
    parser.add_argument("--out", default=os.path.join("runs", "robustness"))
    parser.add_argument("--quick", action="store_true", help="the demo's --quick (tests only)")
    parser.add_argument("--jobs", type=int, default=1, help="demo runs at once (default 1)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the results of runs already finished under --out")
    parser.add_argument("--finished-only", action="store_true",
                        help="with --reuse: report the runs already finished under --out and run none; "
                             "the table names the missing ones and the targets count as missed")
    parser.add_argument("--note", help="a sentence to print under the table (e.g. how runs were reused)")
    parser.add_argument("--readme", action="store_true",
                        help="rewrite README.md's demo results and docs/demo-predictions.png")
    args = parser.parse_args(argv)
    if args.readme and REFERENCE not in [(t, s) for t in args.threads for s in args.seeds]:
        parser.error(f"--readme needs the reference run (threads {REFERENCE[0]}, seed {REFERENCE[1]}) "
                     "in the grid")
    command = shlex.join(["python", "-m", "demo.robustness", *(argv if argv is not None else sys.argv[1:])])
    lock = threading.Lock()

    def log(line):
        with lock:
            print(line, flush=True)

    if args.jobs < 1:
        parser.error(f"--jobs: expected a positive integer, got {args.jobs}")
    if args.finished_only and not args.reuse:
        parser.error("--finished-only reads finished runs: it needs --reuse")
    t0 = time.time()

    fresh = {}

    def one(threads, seed):
        out = os.path.join(args.out, f"threads{threads}-seed{seed}")
        fresh[threads, seed] = not (args.reuse and os.path.exists(os.path.join(out, "results.json")))
        if not fresh[threads, seed]:
            return out, load(out)
        return out, run_one(out, threads, seed, args.quick, log)

    grid = [(t, s) for t in args.threads for s in args.seeds]
    missing = []
    if args.finished_only:
        missing = [(t, s) for t, s in grid if not os.path.exists(
            os.path.join(args.out, f"threads{t}-seed{s}", "results.json"))]
        grid = [key for key in grid if key not in missing]
        if not grid or (args.readme and REFERENCE in missing):
            print(f"demo.robustness: error: --finished-only: "
                  f"{'the reference run' if grid else 'no run'} has finished under {args.out}", file=sys.stderr)
            return 2
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {key: pool.submit(one, *key) for key in grid}
        try:
            results_of = {key: futures[key].result() for key in grid}
        except (RuntimeError, ValueError, OSError) as exc:
            for future in futures.values():
                future.cancel()
            print(f"demo.robustness: error: {exc}", file=sys.stderr)
            return 2
    rows = []
    for (threads, seed), (_, results) in results_of.items():
        ius = {s: results["stages"][s]["mean_iu"] for s in STAGES}
        rows.append(dict(threads=threads, seed=seed, **ius, gain=ius["fcn8s"] - ius["fcn32s"],
                         seconds=results.get("seconds", {}).get("total")))
        log(f"[robustness] threads {threads} seed {seed}: "
            + "  ".join(f"{s} {v:.3f}" for s, v in ius.items()))
    summary, checks = summarise(rows)
    if missing:
        checks[f"the full grid ({len(missing)} of {len(grid) + len(missing)} runs not finished: "
               + ", ".join(f"threads {t} seed {s}" for t, s in missing) + ")"] = False
    machine = host_info()
    all_reused = args.reuse and all(ran is False for ran in fresh.values())
    md = report(rows, summary, checks, machine, command, None if all_reused else args.jobs, args.note)
    atomic_write(os.path.join(args.out, "robustness.md"), md)
    atomic_write(os.path.join(args.out, "robustness.json"), json.dumps(
        dict(machine=machine, command=command, jobs=args.jobs, targets=TARGETS, runs=rows, summary=summary,
             checks=checks), indent=2))
    log("")
    log(md)
    log(f"[robustness] {len(rows)} runs in {time.time() - t0:.0f} s; {args.out}/robustness.md")
    if args.readme:
        out, results = results_of[REFERENCE]
        try:
            update_readme(os.path.join(ROOT, "README.md"), reference_section(results, md, summary))
        except ValueError as exc:
            print(f"demo.robustness: error: {exc}", file=sys.stderr)
            return 2
        picture = os.path.join(ROOT, "docs", "demo-predictions.png")
        with open(os.path.join(out, "predictions.png"), "rb") as f:
            atomic_write(picture, f.read())
        log(f"[robustness] README.md demo results and {picture} rewritten from {out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
