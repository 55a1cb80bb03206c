"""Run the kit's Caffe gtests under a time limit and count passes and failures.

The binary (runtime/bin/caffe-gtest, built by kit/build.sh) holds BVLC
Caffe's own tests for the layers FCN uses. Caffe's typed tests run each
case for every entry of a type list: TestDtypesAndDevices gives
/0 CPU float, /1 CPU double, /2 GPU float, /3 GPU double; the cuDNN
suites (CuDNN*) use TestDtypes and always run on the GPU. So:
- GPU mode runs `*CuDNN*:*/2.*:*/3.*` on GPU N (the gradient checks there
  are the best test the cuDNN port gets);
- CPU mode runs everything else, `-*CuDNN*:*/2.*:*/3.*`.
The output streams to stdout (kit/run.sh keeps it in run.log); the counts go
to the result file. A test that aborts the binary (a failed CHECK) counts as
crashed (a failure) and the remaining tests run on in a new process; tests
the time limit cut off are counted as not run.

Usage: python -m kit.gtest RESULT.txt --binary BIN (--gpu N | --cpu) [--seconds S] [--filter F]
       [--data-dir DIR]
Exit status 0 when every selected test ran and passed, 1 otherwise.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import threading
import time

GPU_FILTER = "*CuDNN*:*/2.*:*/3.*"
CPU_FILTER = "-" + GPU_FILTER
_RESULT = re.compile(r"^\[\s+(OK|FAILED)\s+\] (\S+)\.(\S+) \(\d+ ms\)")


def list_tests(binary, gtest_filter):
    out = subprocess.run([binary, "--gtest_list_tests", f"--gtest_filter={gtest_filter}"],
                         capture_output=True, text=True, timeout=120)
    tests, suite = [], None
    for line in out.stdout.splitlines():
        if not line.strip() or line.startswith(("Cuda", "Current", "Setting")):
            continue
        if not line.startswith(" "):
            suite = line.split()[0].rstrip(".")
        elif suite:
            tests.append(f"{suite}.{line.split()[0]}")
    return tests


def run_once(binary, args, gtest_filter, seconds, cwd):
    """Stream one run's output; ({test: 'OK'|'FAILED'}, the test running when
    it ended, whether the time ran out, exit code)."""
    cmd = [binary, f"--gtest_filter={gtest_filter}", "--gtest_color=no", *args]
    results, running = {}, [None]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd)

    def read():
        for line in proc.stdout:
            sys.stdout.write(line)
            m = _RESULT.match(line)
            if m:
                results.setdefault(f"{m.group(2)}.{m.group(3)}", m.group(1))
                running[0] = None
            elif line.startswith("[ RUN      ] "):
                running[0] = line.split()[3]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=max(seconds, 0.1))
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        timed_out = True
    reader.join(timeout=10)
    sys.stdout.flush()
    return dict(results), running[0], timed_out, proc.returncode


def run(binary, args, tests, seconds, cwd):
    """Run `tests` within `seconds`; a test that kills the binary (a CHECK
    failure aborts the process) counts as CRASHED and the rest run on in a
    new process. ({test: 'OK'|'FAILED'|'CRASHED'}, timed out, last exit code)."""
    results, rc = {}, 0
    deadline = time.monotonic() + seconds
    todo = list(tests)
    while todo:
        got, crashed, timed_out, rc = run_once(binary, args, ":".join(todo),
                                               deadline - time.monotonic(), cwd)
        results.update(got)
        if timed_out:
            return results, True, rc
        if crashed:
            results[crashed] = "CRASHED"
        rest = [t for t in todo if t not in results]
        if len(rest) == len(todo) or rc == 0:
            break
        todo = rest
    return results, False, rc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("result", help="the counts file to write (gtest.txt)")
    p.add_argument("--binary", required=True)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--gpu", type=int)
    mode.add_argument("--cpu", action="store_true")
    p.add_argument("--seconds", type=float, default=90, help="time limit (default 90)")
    p.add_argument("--filter", help="a gtest filter instead of the mode's")
    p.add_argument("--data-dir", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "..", "runtime", "gtest"),
        help="working directory holding src/caffe/test/test_data (default: the kit's)")
    a = p.parse_args(argv)
    if not os.access(a.binary, os.X_OK):
        p.error(f"--binary {a.binary}: not an executable file")
    if a.seconds <= 0:
        p.error("--seconds must be > 0")
    if not os.path.isdir(a.data_dir):
        p.error(f"--data-dir {a.data_dir}: no such directory")

    gtest_filter = a.filter or (CPU_FILTER if a.cpu else GPU_FILTER)
    args = [] if a.cpu else [str(a.gpu)]        # Caffe's test main: argv[1] is the device
    selected = list_tests(a.binary, gtest_filter)
    t0 = time.monotonic()
    results, timed_out, rc = run(a.binary, args, selected, a.seconds, a.data_dir)
    wall = time.monotonic() - t0
    per_suite = collections.OrderedDict()
    for test in selected:
        suite = re.sub(r"/\d+$", "", test.split(".")[0])
        row = per_suite.setdefault(suite, collections.Counter())
        row[{"OK": "passed", "FAILED": "failed", "CRASHED": "failed"}.get(results.get(test), "not run")] += 1
    passed = sum(r["passed"] for r in per_suite.values())
    failed = sorted(t for t, r in results.items() if r != "OK")
    crashed = sorted(t for t, r in results.items() if r == "CRASHED")
    not_run = len(selected) - len(results)
    mode_txt = "CPU (the CPU-typed tests)" if a.cpu else f"GPU {a.gpu} (cuDNN suites and the GPU-typed tests)"
    lines = [f"Caffe gtests, {mode_txt}: filter {gtest_filter}",
             f"selected {len(selected)}, passed {passed}, failed {len(failed)}, not run {not_run}"
             f" ({'time limit ' + format(a.seconds, 'g') + ' s reached' if timed_out else 'binary exit ' + str(rc)}),"
             f" {wall:.0f} s", "",
             f"{'suite':40s} {'passed':>7s} {'failed':>7s} {'not run':>8s}"]
    for suite, row in per_suite.items():
        lines.append(f"{suite:40s} {row['passed']:7d} {row['failed']:7d} {row['not run']:8d}")
    lines += [""] + [f"{'CRASHED' if t in crashed else 'FAILED'} {t}" for t in failed]
    summary = dict(mode="cpu" if a.cpu else "gpu", gpu=a.gpu, filter=gtest_filter,
                   selected=len(selected), passed=passed, failed=len(failed), not_run=not_run,
                   timed_out=timed_out, exit_code=rc, seconds=round(wall, 1), failed_tests=failed,
                   crashed_tests=crashed,
                   suites={s: dict(r) for s, r in per_suite.items()})
    lines.append("json: " + json.dumps(summary))
    tmp = a.result + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, a.result)
    print("\n".join(lines[:2]))
    ok = not failed and not_run == 0 and passed == len(selected) > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
