"""The SGD loop of a run: step the solver, report progress, stop on a
diverged loss, snapshot on Ctrl-C or on a failure mid-run (naming the
snapshot kept), and score every so often."""
import math
import os
import signal
import time

import numpy as np

import caffe

from common.cli import USER_ERRORS, one_line
from common.seed import SEED

from .errors import RunError, TrainingDiverged


def remaining_iterations(requested, max_iter, start_iter):
    """Iterations a run steps: `requested` when given, else what is left of
    the solver's max_iter after `start_iter` (a resumed solver's iteration)."""
    if requested is not None:
        return max(0, int(requested))
    return max(0, int(max_iter) - int(start_iter))


class Snapshots:
    """The snapshots Caffe writes into `run_dir`/snapshots for a solver with
    `prefix` (its snapshot_prefix)."""

    def __init__(self, solver, run_dir, prefix):
        self.solver, self.dir, self.prefix = solver, os.path.join(run_dir, "snapshots"), prefix

    def path(self, iteration, ext=".solverstate"):
        """Where Caffe writes the snapshot of `iteration`."""
        return f"{self.prefix}_iter_{iteration}{ext}"

    def caffemodels(self):
        """The caffemodel snapshots so far, sorted by name."""
        return sorted(f for f in os.listdir(self.dir) if f.endswith(".caffemodel"))

    def drop(self, iteration):
        for ext in (".caffemodel", ".solverstate"):
            path = self.path(iteration, ext)
            if os.path.exists(path):
                os.remove(path)

    def after_error(self, start_iter):
        """Snapshot the state after the last completed iteration (a failed
        step stops before its update); where it is, for the error."""
        if self.solver.iter == start_iter:
            return (f"stopped before completing an iteration of this run; "
                    f"nothing snapshotted (the run is at iteration {start_iter})")
        self.solver.snapshot()
        state = self.path(self.solver.iter)
        return (f"stopped; the last good state (iteration {self.solver.iter}) is snapshotted as "
                f"{state} (continue with --resume {state})")


def total_loss(net):
    """The sum of a net's loss outputs."""
    return float(sum(net.blobs[name].data for name in net.outputs if name.startswith("loss")))


def sgd_steps(solver, iters, snapshots, history, name, images_per_iter, score=None,
              score_every=None, display=20, log=print):
    """Step `solver` `iters` iterations, appending (iteration, loss) to
    `history` and calling `score()` every `score_every` (not at the end).

    A NaN loss raises TrainingDiverged (its snapshot dropped); Ctrl-C
    snapshots and raises KeyboardInterrupt; any other failure snapshots the
    last good state and re-raises, a user error as RunError saying where
    the snapshot is."""
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    start_iter, t0 = solver.iter, time.time()
    window = []
    try:
        for i in range(iters):
            caffe.set_random_seed(SEED + solver.iter)   # dropout masks replay on resume
            solver.step(1)
            loss = total_loss(solver.net)
            if not math.isfinite(loss):
                snapshots.drop(solver.iter)   # taken after the bad update
                raise TrainingDiverged(
                    f"{name}: loss is {loss} at iteration {solver.iter}; "
                    f"stopped without snapshotting this state. Last good snapshots: "
                    f"{snapshots.caffemodels() or 'none'}. Lower base_lr or check the data.")
            history.append((solver.iter, loss))
            window.append(loss)
            done = i + 1
            if done % display == 0 or done == iters:
                elapsed = time.time() - t0
                rate = done * images_per_iter / max(elapsed, 1e-9)
                eta = (iters - done) * images_per_iter / max(rate, 1e-9)
                log(f"[{name}] iter {solver.iter} ({done}/{iters})  "
                    f"loss {np.mean(window):.4g}  {rate:.2f} img/s  ETA {eta:.0f} s")
                window = []
            if score and score_every and done % score_every == 0 and done != iters:
                score()
            if interrupted:
                solver.snapshot()
                log(f"[{name}] interrupted: snapshot at iteration "
                    f"{solver.iter} in {snapshots.dir}/")
                raise KeyboardInterrupt
    except (TrainingDiverged, KeyboardInterrupt):
        raise
    except Exception as exc:
        where = snapshots.after_error(start_iter)
        if isinstance(exc, USER_ERRORS):
            raise RunError(f"{one_line(exc)} -- {where}") from exc
        log(f"[{name}] {type(exc).__name__}: {where}")
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
