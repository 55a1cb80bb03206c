"""One training run of one model in runs/<model>/: its prototxts, solver,
initialisation, SGD loop, scores and snapshots.

Everything a run produces lands in its directory: the generated prototxts,
the solver definition, snapshots, metrics.jsonl, the learning curve and
final.caffemodel (the next stage's initialisation).
"""
import json
import math
import os
import signal
import sys
import time

import numpy as np

import caffe
from google.protobuf import text_format

from common.atomic import atomic_write
from net_specs import PHASES, build, get_model
from surgery.io import WeightsFile, save_weights
from surgery.bilinear import interp, upsampling_layers
from surgery.recipe import initialise

from .config import solver_param
from .curves import plot_curves
from .evaluate import dataset_heads, score_net
from .metrics import METRIC_KEYS

SEED = 1337


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite.

    After a NaN step the process dies with "double free or corruption" at
    exit (observed on the CPU build; likely cause: max pooling keeps a mask
    index of -1 for all-NaN windows and backward writes through it), so the
    heap may already be corrupt when this is raised: callers should report
    it and leave with `hard_exit`.
    """


def hard_exit(code):
    """Flush and leave without running Caffe's destructors (see TrainingDiverged)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def data_layer(net):
    """The Python data layer object of a net (Caffe hands back the instance)."""
    for layer in net.layers:
        if layer.type == "Python":
            return layer
    raise ValueError("net has no Python data layer")


class Run:
    """One training run of one model in runs/<model>/."""

    def __init__(self, model, out_dir=None, width=1.0, dataset=None, root=None,
                 solver_overrides=None, snapshot_every=4000, prefetch=True, seed=SEED):
        """Only the run's settings and paths; `open` (or `Run.open`) makes it."""
        self.model = get_model(model) if isinstance(model, str) else model
        self.dataset = dataset or self.model.get_dataset()
        self.dir = out_dir or os.path.join("runs", self.model.name)
        self.width, self.root, self.prefetch, self.seed = width, root, prefetch, seed
        self.solver_overrides, self.snapshot_every = solver_overrides, snapshot_every
        self.paths = {p: os.path.join(self.dir, f"{p}.prototxt") for p in PHASES}
        self.solver_path = os.path.join(self.dir, "solver.prototxt")
        self.metrics_path = os.path.join(self.dir, "metrics.jsonl")
        self.param = self.solver = self.val_size = None
        self.history = []

    @classmethod
    def open(cls, model, **settings):
        """A run ready to train: data checked, prototxts and solver written,
        the solver built (see `make`)."""
        return cls(model, **settings).make()

    def make(self):
        """Check the data, write the nets and the solver, build the solver."""
        self.check_data()
        os.makedirs(os.path.join(self.dir, "snapshots"), exist_ok=True)
        self.write_nets()
        self.param = solver_param(self.model, os.path.abspath(self.paths["train"]),
                                  os.path.abspath(self.paths["val"]),
                                  os.path.abspath(os.path.join(self.dir, "snapshots", "train")),
                                  1, self.snapshot_every, self.solver_overrides)
        self.write_solver()
        self.solver = caffe.SGDSolver(self.solver_path)
        # The val split's size is known once its data layer has read the split.
        self.val_size = len(data_layer(self.solver.test_nets[0]).ids)
        self.param.test_iter[0] = self.val_size
        self.write_solver()
        return self

    def write_nets(self):
        """train/val/deploy.prototxt of the model on the run's dataset."""
        for phase, path in self.paths.items():
            proto = build(self.model, phase, dataset=self.dataset, root=self.root, width=self.width,
                          prefetch=self.prefetch, seed=self.seed)
            atomic_write(path, str(proto))

    def write_solver(self):
        atomic_write(self.solver_path, text_format.MessageToString(self.param))

    def check_data(self):
        """Fail before building anything when the dataset is not on disk."""
        for source in (self.dataset.train, self.dataset.val):
            root = self.root or source.root
            if not os.path.isdir(root):
                fetch = (f"run `make {self.dataset.fetch_target}` to download it, or "
                         if self.dataset.fetch_target else "")
                raise FileNotFoundError(f"{self.model.name}: dataset {self.dataset.name!r} not found "
                                        f"at {root}; {fetch}pass --root PATH")

    # -- initialisation --------------------------------------------------
    def init_from(self, weights):
        """Initialise from each caffemodel of model.init (surgery.recipe:
        transplant by name with fc -> conv coercion, color-depth first conv,
        bilinear upsampling). Any caffemodel works as a source: an ILSVRC
        classifier, an earlier stage, a surgery output."""
        weights = check_weights(self.model, weights)
        suffixes = self.model.streams or ("",) * len(weights)
        for path, suffix in zip(weights, suffixes):
            initialise(WeightsFile(path), self.solver.net, suffix=suffix)

    def bilinear(self):
        interp(self.solver.net, upsampling_layers(self.solver.net))

    def resume(self, state):
        if not os.path.isfile(state):
            raise FileNotFoundError(f"--resume: no solver state at {state}")
        self.solver.restore(state)
        # Put the data stream where the interrupted run left it.
        data_layer(self.solver.net).skip(self.solver.iter * self.param.iter_size)

    # -- training --------------------------------------------------------
    def loss(self):
        net = self.solver.net
        return float(sum(net.blobs[name].data for name in net.outputs if name.startswith("loss")))

    def heads(self):
        """(score, label, classes, present_only) per head, as the dataset
        record says (SIFT Flow's semantic head: present classes only)."""
        return dataset_heads(self.dataset)

    def score(self):
        net = self.solver.test_nets[0]
        net.share_with(self.solver.net)
        return score_net(net, self.val_size, self.heads())

    def train(self, iters, score_every=None, display=20, log=print):
        """Step `iters` iterations, scoring every `score_every` (and at the end)."""
        interrupted = []
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        start_iter, t0 = self.solver.iter, time.time()
        images_per_iter = self.param.iter_size
        window = []
        try:
            for i in range(iters):
                caffe.set_random_seed(SEED + self.solver.iter)   # dropout masks replay on resume
                self.solver.step(1)
                loss = self.loss()
                if not math.isfinite(loss):
                    self._drop_snapshot(self.solver.iter)   # taken after the bad update
                    raise TrainingDiverged(
                        f"{self.model.name}: loss is {loss} at iteration {self.solver.iter}; "
                        f"stopped without snapshotting this state. Last good snapshots: "
                        f"{self.snapshots() or 'none'}. Lower base_lr or check the data.")
                self.history.append((self.solver.iter, loss))
                window.append(loss)
                done = i + 1
                if done % display == 0 or done == iters:
                    elapsed = time.time() - t0
                    rate = done * images_per_iter / max(elapsed, 1e-9)
                    eta = (iters - done) * images_per_iter / max(rate, 1e-9)
                    log(f"[{self.model.name}] iter {self.solver.iter} ({done}/{iters})  "
                        f"loss {np.mean(window):.4g}  {rate:.2f} img/s  ETA {eta:.0f} s")
                    window = []
                if score_every and done % score_every == 0 and done != iters:
                    self.record(self.score(), log)
                if interrupted:
                    self.solver.snapshot()
                    log(f"[{self.model.name}] interrupted: snapshot at iteration "
                        f"{self.solver.iter} in {self.dir}/snapshots/")
                    raise KeyboardInterrupt
            if iters:
                self.record(self.score(), log)
        finally:
            signal.signal(signal.SIGINT, previous)
        self.solver.snapshot()
        final = os.path.join(self.dir, "final.caffemodel")
        save_weights(self.solver.net, final)
        plot_curves(self.history, self.read_metrics(), os.path.join(self.dir, "curves.png"),
                    title=self.model.name)
        return final

    def _drop_snapshot(self, iteration):
        for ext in (".caffemodel", ".solverstate"):
            path = f"{self.param.snapshot_prefix}_iter_{iteration}{ext}"
            if os.path.exists(path):
                os.remove(path)

    def snapshots(self):
        snap = os.path.join(self.dir, "snapshots")
        return sorted(f for f in os.listdir(snap) if f.endswith(".caffemodel"))

    def record(self, scores, log=print):
        """Append one line to metrics.jsonl: training loss, val loss and the
        papers' metrics (the first head's at top level, every head under
        `heads`)."""
        recent = [l for it, l in self.history[-20:]]
        heads = {name: {k: v for k, v in m.items() if k != "hist"} for name, m in scores["heads"].items()}
        first = next(iter(heads.values()))
        entry = {"iteration": self.solver.iter,
                 "loss": float(np.mean(recent)) if recent else None, "val_loss": scores["loss"]}
        entry.update({k: first[k] for k in METRIC_KEYS + ("per_class_iu",)})
        if len(heads) > 1:
            entry["heads"] = heads
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        for head, m in heads.items():
            log(f"[{self.model.name}] iter {self.solver.iter} {head}: "
                + "  ".join(f"{k} {m[k]:.4f}" for k in METRIC_KEYS))
        return entry

    def read_metrics(self):
        """Every entry of metrics.jsonl so far, oldest first."""
        return read_metrics(self.metrics_path)


def read_metrics(path):
    """The entries of a metrics.jsonl file ([] when there is none yet)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def solverstate_iter(path):
    """The iteration a .solverstate was taken at (ValueError if unreadable)."""
    from caffe.proto import caffe_pb2
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no solver state at {path}")
    state = caffe_pb2.SolverState()
    try:
        with open(path, "rb") as f:
            state.ParseFromString(f.read())
    except Exception as exc:  # protobuf's DecodeError and its upb variants
        raise ValueError(f"--resume: {path} is not a readable .solverstate ({exc})") from None
    return state.iter


def remaining_iterations(requested, max_iter, start_iter):
    """Iterations a run steps: `requested` when given, else what is left of
    the solver's max_iter after `start_iter` (a resumed solver's iteration)."""
    if requested is not None:
        return max(0, int(requested))
    return max(0, int(max_iter) - int(start_iter))


def check_weights(model, weights):
    """The initial caffemodels, one per model.init, each present on disk."""
    weights = list(weights or [])
    if len(weights) != len(model.init):
        raise ValueError(f"{model.name} starts from {len(model.init)} net(s) "
                         f"({', '.join(model.init)}); got {len(weights)} --weights file(s)")
    for source, path in zip(model.init, weights):
        if not os.path.isfile(path):
            hint = (f"`make weights-{source.split('-')[0]}` downloads the ImageNet weights"
                    if source.endswith("-ilsvrc") else
                    f"train {source} first (`make runs/{source}/final.caffemodel`)")
            raise FileNotFoundError(f"initial weights {path} (from {source}) not found; {hint}")
    return weights
