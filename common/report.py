"""Machine facts and Markdown tables for the figures that benchmarks and the
demo's robustness grid print (shared so that demo need not import bench)."""
import datetime
import os
import platform
import socket

N_CORES = len(os.sched_getaffinity(0))
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "BLIS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_env(threads):
    """Environment that pins every BLAS / OpenMP runtime to `threads` threads."""
    return {k: str(threads) for k in THREAD_VARS}


def host_info():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(host=socket.gethostname(), cpu=cpu, cores=N_CORES,
                date=datetime.datetime.now().isoformat(timespec="seconds"),
                loadavg=os.getloadavg())


def markdown(rows, columns):
    """A Markdown table of dicts; `columns` is [(key, header, format)]."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, rule]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("-" if v is None else (fmt.format(v) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def peak_rss_mb():
    """Peak resident set of this process (VmHWM), MiB. Not ru_maxrss: Linux
    carries that over fork and exec, so a child of a large process reports the
    parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
