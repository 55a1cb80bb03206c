"""One training run of one model in runs/<model>/: the record that ties its
jobs together -- staging (staging.py), start from weights or a solver state
(start.py, solverstate.py), the SGD loop (loop.py), metrics.jsonl
(metrics_file.py) -- over its prototxts, solver, scores and snapshots.

Everything a run produces lands in its directory: the generated prototxts,
the solver definition, snapshots, metrics.jsonl, the learning curve and
final.caffemodel (the next stage's initialisation).
"""
import os
import sys

import caffe
from google.protobuf import text_format

from common.atomic import atomic_write
from common.cli import USER_ERRORS, one_line
from net_specs import PHASES, NetConfig, build
from netio.nets import save_weights
from surgery.bilinear import interp, upsampling_layers

from ..scoring.evaluate import dataset_heads, score_net
from ..scoring.metrics import METRIC_KEYS
from .config import solver_param
from .curves import plot_curves
from .errors import RunError, TrainingDiverged, hard_exit  # noqa: F401  (the API)
from .loop import Snapshots, remaining_iterations, sgd_steps, total_loss  # noqa: F401
from .metrics_file import append_entry, keep_metrics_until, metrics_entry, read_metrics, set_aside
from .solverstate import check_solverstate, read_solverstate, solverstate_iter  # noqa: F401
from .lock import RunLock
from .staging import Staging
from .start import check_weights, init_from, restore  # noqa: F401


def data_layer(net):
    """The Python data layer object of a net (Caffe hands back the instance)."""
    for layer in net.layers:
        if layer.type == "Python":
            return layer
    raise ValueError("net has no Python data layer")


class Run:
    """One training run of one model in runs/<model>/."""

    def __init__(self, net, out_dir=None, solver_overrides=None, snapshot_every=4000):
        """Only the run's settings and paths; `open` (or `Run.open`) makes it.
        `net`: a NetConfig (net_specs.netconfig: model, dataset, width and the
        data layers' loading), or a model name or Model on its own dataset."""
        self.net = NetConfig.of(net)
        self.model, self.dataset = self.net.model, self.net.dataset
        self.dir = out_dir or os.path.join("runs", self.model.name)
        self.solver_overrides, self.snapshot_every = solver_overrides, snapshot_every
        self.paths = {p: os.path.join(self.dir, f"{p}.prototxt") for p in PHASES}
        self.solver_path = os.path.join(self.dir, "solver.prototxt")
        self.metrics_path = os.path.join(self.dir, "metrics.jsonl")
        self.param = self.solver = self.val_size = self.snapshots = None
        self.staging = self.resumed_at = self.lock = None
        self.history = []

    @classmethod
    def open(cls, model, **settings):
        """A run ready to train: data checked, prototxts and solver written,
        the solver built (see `make`)."""
        return cls(model, **settings).make()

    def make(self):
        """Check the data and build the solver from nets and a solver written
        into a staging directory inside the run directory; `commit` moves
        them into place, so a run that fails before then (bad weights, bad
        state) leaves an existing run's files as they were."""
        self.check_data()
        os.makedirs(os.path.join(self.dir, "snapshots"), exist_ok=True)
        self.lock = RunLock(self.dir)            # before anything of the directory changes
        if self.lock.stale:
            print(f"note: {self.lock.path} was left by a run that is gone ({self.lock.stale}); "
                  "taken over", file=sys.stderr)
        self.staging = Staging(self.dir)
        try:
            self._build_staged()
        except BaseException:
            self.discard()
            raise
        return self

    def _build_staged(self):
        staged = {p: self.staging.file(path) for p, path in self.paths.items()}
        self.write_nets(staged)
        self.param = solver_param(self.model, os.path.abspath(self.paths["train"]),
                                  os.path.abspath(self.paths["val"]),
                                  os.path.abspath(os.path.join(self.dir, "snapshots", "train")),
                                  1, self.snapshot_every, self.solver_overrides)
        staged_param = type(self.param)()
        staged_param.CopyFrom(self.param)
        staged_param.train_net = os.path.abspath(staged["train"])
        staged_param.test_net[0] = os.path.abspath(staged["val"])
        staged_solver = self.staging.file(self.solver_path)
        atomic_write(staged_solver, text_format.MessageToString(staged_param))
        self.solver = caffe.get_solver(staged_solver)    # the class its `type` names (SGD by default)
        self.snapshots = Snapshots(self.solver, self.dir, self.param.snapshot_prefix,
                                   self.param.snapshot)
        # The val split's size is known once its data layer has read the split.
        self.val_size = len(data_layer(self.solver.test_nets[0]).ids)
        self.param.test_iter[0] = self.val_size
        self.write_solver(staged_solver)         # the one that lands names the final nets

    def commit(self):
        """Move the staged nets and solver into the run directory and start
        its metrics: a fresh run sets an earlier metrics.jsonl aside (as
        metrics.jsonl.N, N = 1, 2, ... in the order they were replaced); a
        resumed run keeps the lines up to the iteration it resumed from."""
        if self.staging is None:
            return
        # room for a snapshot and final.caffemodel, before an earlier run's files are touched
        self.snapshots.ensure_room(copies=4)
        if self.resumed_at is None:
            set_aside(self.metrics_path)
        else:
            keep_metrics_until(self.metrics_path, self.resumed_at)
        self.staging.commit()
        self.staging = None

    def discard(self):
        """Drop the staged files (the run directory keeps what it had)."""
        if self.staging is not None:
            self.staging.discard()
            self.staging = None
        self.release()

    def release(self):
        """Let another run use the directory (also when the process ends)."""
        if self.lock is not None:
            self.lock.release()

    def write_nets(self, paths=None):
        """train/val/deploy.prototxt of the model on the run's dataset."""
        for phase, path in (paths or self.paths).items():
            atomic_write(path, str(build(self.net, phase)))

    def write_solver(self, path=None):
        atomic_write(path or self.solver_path, text_format.MessageToString(self.param))

    def check_data(self):
        """Fail before building anything when the dataset is not on disk."""
        for source in (self.dataset.train, self.dataset.val):
            root = self.net.data_root(source)
            if not os.path.isdir(root):
                fetch = (f"run `make {self.dataset.fetch_target}` to download it, or "
                         if self.dataset.fetch_target else "")
                raise FileNotFoundError(f"{self.model.name}: dataset {self.dataset.name!r} not found "
                                        f"at {root}; {fetch}pass --root PATH")

    # -- initialisation (solvers.training.start) -------------------------
    def init_from(self, weights):
        """Initialise from each caffemodel of model.init (start.init_from)."""
        init_from(self.model, self.solver.net, weights)

    def bilinear(self):
        interp(self.solver.net, upsampling_layers(self.solver.net))

    def resume(self, state):
        """Continue from a checked .solverstate (start.restore) and put the
        data stream where the interrupted run left it."""
        restore(self.solver, state, self.model.name, self.param.type)
        self.resumed_at = self.solver.iter
        data_layer(self.solver.net).skip(self.solver.iter * self.param.iter_size)

    # -- training (solvers.training.loop) --------------------------------
    def loss(self):
        return total_loss(self.solver.net)

    def heads(self):
        """(score, label, classes, present_only) per head, as the dataset
        record says (SIFT Flow's semantic head: present classes only)."""
        return dataset_heads(self.dataset)

    def score(self):
        net = self.solver.test_nets[0]
        net.share_with(self.solver.net)
        return score_net(net, self.val_size, self.heads())

    def train(self, iters, score_every=None, display=20, log=print):
        """Step `iters` iterations, scoring every `score_every` (and at the end).

        The staged files are committed first. A failure mid-run (a bad
        image, a bad val label) snapshots the last good state and raises
        RunError saying where it is; the final weights (snapshot and
        final.caffemodel) are written before the final scoring, so a
        failure there keeps them."""
        self.commit()
        if self.lock is None or self.lock.fd is None:    # a Run trained again after a release
            self.lock = RunLock(self.dir)
        try:
            return self._train(iters, score_every, display, log)
        finally:
            self.release()

    def _train(self, iters, score_every, display, log):
        sgd_steps(self.solver, iters, self.snapshots, self.history, self.model.name,
                  self.param.iter_size, score=lambda: self.record(self.score(), log),
                  score_every=score_every, display=display, log=log)
        self.snapshots.take()
        final = os.path.join(self.dir, "final.caffemodel")
        save_weights(self.solver.net, final)
        if iters:
            try:
                self.record(self.score(), log)
            except USER_ERRORS as exc:
                raise RunError(f"final scoring failed: {one_line(exc)} -- the trained weights are "
                               f"kept in {final} and {self.snapshots.path(self.solver.iter)}") from exc
        plot_curves(self.history, self.read_metrics(), os.path.join(self.dir, "curves.png"),
                    title=self.model.name)
        return final

    def record(self, scores, log=print):
        """Append one line to metrics.jsonl (metrics_file.metrics_entry) and log it."""
        entry, heads = metrics_entry(self.solver.iter, self.history, scores)
        append_entry(self.metrics_path, entry)
        for head, m in heads.items():
            log(f"[{self.model.name}] iter {self.solver.iter} {head}: "
                + "  ".join(f"{k} {m[k]:.4f}" for k in METRIC_KEYS))
        return entry

    def read_metrics(self):
        """Every entry of metrics.jsonl so far, oldest first."""
        return read_metrics(self.metrics_path)
