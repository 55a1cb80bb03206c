"""Stand-in rank functions for solvers.multigpu's process supervision: what a
rank does (exit, crash, block in a collective) without Caffe or a GPU. A
module of its own so that spawned children can import it."""
import os
import signal
import time

STATE = "imported"      # a test sets it in the parent; a forked child would see that value


def behave(plan, out_dir, rank, stop):
    """Rank `rank` does plan[rank]; it first records the STATE it sees (once
    that is written, a rank that ignores Ctrl-C already does)."""
    what = plan[rank]
    if what in ("until-stop", "blocked"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # as solvers.multigpu's ranks > 0
    with open(os.path.join(out_dir, f"rank{rank}.state"), "w") as f:
        f.write(STATE)
    if what == "ok":
        return
    if what == "exit2":
        os._exit(2)
    if what == "abort":
        time.sleep(0.3)
        os.abort()                                  # SIGABRT, as a Caffe CHECK does
    if what == "until-stop":                        # a rank that polls the shared flag
        while not stop.is_set():
            time.sleep(0.05)
        with open(os.path.join(out_dir, f"rank{rank}.stopped"), "w") as f:
            f.write("flag")
        return
    if what == "blocked":                           # stuck in an NCCL collective: never looks
        while True:
            time.sleep(1)
    raise ValueError(what)
