"""One training run of one model in runs/<model>/: the record that ties its
jobs together -- staging (staging.py), start from weights or a solver state
(start.py, solverstate.py), the SGD loop (loop.py), metrics.jsonl
(metrics_file.py) -- over its prototxts, solver, scores and snapshots.

Everything a run produces lands in its directory: the generated prototxts,
the solver definition, snapshots, metrics.jsonl, the learning curve and
final.caffemodel (the next stage's initialisation).
"""
import os

import caffe
from google.protobuf import text_format

from common.atomic import atomic_write
from common.cli import USER_ERRORS, one_line
from common.seed import SEED
from net_specs import PHASES, build, get_model
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

    def __init__(self, model, out_dir=None, width=1.0, dataset=None, root=None,
                 solver_overrides=None, snapshot_every=4000, prefetch=True, seed=SEED,
                 workers=None, queue_depth=None):
        """Only the run's settings and paths; `open` (or `Run.open`) makes it.
        `workers` / `queue_depth`: the data layers' loader processes and the
        examples each keeps ready (None: the layers' defaults)."""
        self.model = get_model(model) if isinstance(model, str) else model
        self.dataset = dataset or self.model.get_dataset()
        self.dir = out_dir or os.path.join("runs", self.model.name)
        self.width, self.root, self.prefetch, self.seed = width, root, prefetch, seed
        self.workers, self.queue_depth = workers, queue_depth
        self.solver_overrides, self.snapshot_every = solver_overrides, snapshot_every
        self.paths = {p: os.path.join(self.dir, f"{p}.prototxt") for p in PHASES}
        self.solver_path = os.path.join(self.dir, "solver.prototxt")
        self.metrics_path = os.path.join(self.dir, "metrics.jsonl")
        self.param = self.solver = self.val_size = self.snapshots = None
        self.staging = self.resumed_at = None
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
        self.snapshots = Snapshots(self.solver, self.dir, self.param.snapshot_prefix)
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

    def write_nets(self, paths=None):
        """train/val/deploy.prototxt of the model on the run's dataset."""
        for phase, path in (paths or self.paths).items():
            proto = build(self.model, phase, dataset=self.dataset, root=self.root, width=self.width,
                          prefetch=self.prefetch, seed=self.seed, workers=self.workers,
                          queue_depth=self.queue_depth)
            atomic_write(path, str(proto))

    def write_solver(self, path=None):
        atomic_write(path or self.solver_path, text_format.MessageToString(self.param))

    def check_data(self):
        """Fail before building anything when the dataset is not on disk."""
        for source in (self.dataset.train, self.dataset.val):
            root = self.root or source.root
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
        sgd_steps(self.solver, iters, self.snapshots, self.history, self.model.name,
                  self.param.iter_size, score=lambda: self.record(self.score(), log),
                  score_every=score_every, display=display, log=log)
        self.solver.snapshot()
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
