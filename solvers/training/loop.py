"""The SGD loop of a run: step the solver, report progress, stop on a
diverged loss or non-finite weights, snapshot on Ctrl-C, SIGTERM or a
failure mid-run (naming the snapshot kept), and score every so often."""
import math
import os
import signal
import sys
import time

import numpy as np

import caffe

from common.cli import USER_ERRORS, Terminated, one_line
from common.outputs import OutputError, check_free_space
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
    `prefix` (its snapshot_prefix), every `every` iterations.

    Caffe aborts the process when a snapshot cannot be written (a glog
    CHECK: exit 134 and a truncated file), so the free space is checked
    before every snapshot, ours and Caffe's periodic ones. A snapshot is good
    only if its weights are finite: one whose weights hold NaN or inf (taken
    as the loss ran away, before it showed as NaN) is dropped at once."""

    def __init__(self, solver, run_dir, prefix, every=0):
        self.solver, self.dir, self.prefix = solver, os.path.join(run_dir, "snapshots"), prefix
        self.every = int(every or 0)
        self.verified = set()           # iterations whose snapshot was checked finite

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

    def ensure_room(self, iteration=None, copies=3):
        """OutputError unless `copies` times the weights fit on disk (a
        snapshot: the caffemodel + the history, up to 2 blobs for Adam)."""
        weights = sum(b.data.nbytes for blobs in self.solver.net.params.values() for b in blobs)
        check_free_space(self.path(self.solver.iter if iteration is None else iteration),
                         copies * weights)

    def before_step(self):
        """Called before each step: room for the snapshot Caffe takes after it?"""
        if self.every and (self.solver.iter + 1) % self.every == 0:
            self.ensure_room(self.solver.iter + 1)

    def take(self):
        """Snapshot now (room checked first); the .solverstate's path."""
        self.ensure_room()
        self.solver.snapshot()
        if weights_finite(self.solver.net):
            self.verified.add(self.solver.iter)
        return self.path(self.solver.iter)

    def after_step(self, name):
        """Check the snapshot Caffe may have just taken: non-finite weights
        drop it and raise TrainingDiverged naming the last finite one."""
        iteration = self.solver.iter
        if iteration in self.verified or not os.path.exists(self.path(iteration, ".caffemodel")):
            return
        if weights_finite(self.solver.net):
            self.verified.add(iteration)
            return
        self.drop(iteration)
        raise TrainingDiverged(f"{name}: the weights hold NaN or inf at iteration {iteration} "
                               f"(loss {total_loss(self.solver.net):.4g}); that snapshot is "
                               f"dropped. {self.last_finite_text()} Lower base_lr or check the data.")

    def last_finite(self):
        """The newest caffemodel snapshot whose weights are all finite, or None."""
        def iteration(name):
            return int(name.rsplit("_iter_", 1)[1].split(".")[0])
        for name in sorted(self.caffemodels(), key=iteration, reverse=True):
            if iteration(name) in self.verified or file_weights_finite(os.path.join(self.dir, name)):
                return os.path.join(self.dir, name)
        return None

    def last_finite_text(self):
        last = self.last_finite()
        if last is None:
            return "No snapshot with finite weights is left."
        state = last[:-len(".caffemodel")] + ".solverstate"
        return (f"Last good (finite) snapshot: {last} (continue with --resume {state} and a "
                f"lower --base-lr).")

    def after_error(self, start_iter):
        """Snapshot the state after the last completed iteration (a failed
        step stops before its update); where it is, for the error."""
        if self.solver.iter == start_iter:
            return (f"stopped before completing an iteration of this run; "
                    f"nothing snapshotted (the run is at iteration {start_iter})")
        try:
            state = self.take()
        except OutputError as exc:
            return f"stopped; no snapshot written ({one_line(exc)})"
        return (f"stopped; the last good state (iteration {self.solver.iter}) is snapshotted as "
                f"{state} (continue with --resume {state})")


def weights_finite(net):
    return all(np.isfinite(b.data).all() for blobs in net.params.values() for b in blobs)


def file_weights_finite(path):
    """Whether every blob of a caffemodel file is finite (False if unreadable)."""
    from caffe.proto import caffe_pb2
    param = caffe_pb2.NetParameter()
    try:
        with open(path, "rb") as f:
            param.ParseFromString(f.read())
    except Exception:
        return False
    return all(np.isfinite(np.asarray(blob.data, np.float32)).all()
               for layer in list(param.layer) + list(param.layers) for blob in layer.blobs)


def total_loss(net):
    """The sum of a net's loss outputs."""
    return float(sum(net.blobs[name].data for name in net.outputs if name.startswith("loss")))


def sgd_steps(solver, iters, snapshots, history, name, images_per_iter, score=None,
              score_every=None, display=20, log=print):
    """Step `solver` `iters` iterations, appending (iteration, loss) to
    `history` and calling `score()` every `score_every` (not at the end).

    A NaN loss, or a snapshot with non-finite weights, raises
    TrainingDiverged (that snapshot dropped, the last finite one named);
    Ctrl-C or SIGTERM snapshots, says on stderr how to resume, and raises
    KeyboardInterrupt (common.cli.Terminated for SIGTERM); any other failure
    snapshots the last good state and re-raises, a user error as RunError
    saying where the snapshot is."""
    interrupted = []
    previous = {sig: signal.signal(sig, lambda signum, _: interrupted.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    start_iter, t0 = solver.iter, time.time()
    window = []
    try:
        for i in range(iters):
            caffe.set_random_seed(SEED + solver.iter)   # dropout masks replay on resume
            snapshots.before_step()
            solver.step(1)
            loss = total_loss(solver.net)
            if not math.isfinite(loss):
                snapshots.drop(solver.iter)   # taken after the bad update
                raise TrainingDiverged(
                    f"{name}: loss is {loss} at iteration {solver.iter}; stopped without "
                    f"snapshotting this state. {snapshots.last_finite_text()} Lower base_lr or "
                    "check the data.")
            snapshots.after_step(name)
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
                stop(snapshots, name, interrupted[0])
    except (TrainingDiverged, KeyboardInterrupt):
        raise
    except Exception as exc:
        where = snapshots.after_error(start_iter)
        if isinstance(exc, USER_ERRORS):
            raise RunError(f"{one_line(exc)} -- {where}") from exc
        log(f"[{name}] {type(exc).__name__}: {where}")
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop(snapshots, name, signum):
    """Snapshot after Ctrl-C or SIGTERM and raise, saying how to go on: Ctrl-C
    on stderr, SIGTERM in the Terminated that the CLI prints as its one line."""
    state = snapshots.take()
    where = f"at iteration {snapshots.solver.iter}: snapshot {state}; continue with --resume {state}"
    if signum == signal.SIGTERM:
        raise Terminated(f"{name}: terminated by SIGTERM {where}")
    print(f"[{name}] interrupted {where}", file=sys.stderr, flush=True)
    raise KeyboardInterrupt
