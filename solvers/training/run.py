"""One training run of one model in runs/<model>/: its prototxts, solver,
initialisation, SGD loop, scores and snapshots.

Everything a run produces lands in its directory: the generated prototxts,
the solver definition, snapshots, metrics.jsonl, the learning curve and
final.caffemodel (the next stage's initialisation).
"""
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

import caffe
from google.protobuf import text_format

from common.atomic import atomic_write
from common.cli import USER_ERRORS, one_line
from common.errors import UserError
from net_specs import PHASES, build, get_model
from surgery.io import WeightsFile, blob_proto_shape, save_weights
from surgery.bilinear import interp, upsampling_layers
from surgery.recipe import initialise

from .config import solver_param
from .curves import plot_curves
from .evaluate import dataset_heads, score_net
from .metrics import METRIC_KEYS
from .weights import load_weights

SEED = 1337
HISTORY_ROUNDS = {"Adam": 2, "AdaDelta": 2}   # history blobs per parameter blob, by solver type


class RunError(UserError):
    """A run that cannot start or go on as asked (a bad .solverstate, a
    failure mid-run); the message says what was kept and where."""


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
        self.param = self.solver = self.val_size = None
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
        self.staging = tempfile.mkdtemp(prefix=".staging-", dir=self.dir)
        try:
            self._build_staged()
        except BaseException:
            self.discard()
            raise
        return self

    def _build_staged(self):
        staged = {p: os.path.join(self.staging, os.path.basename(path)) for p, path in self.paths.items()}
        self.write_nets(staged)
        self.param = solver_param(self.model, os.path.abspath(self.paths["train"]),
                                  os.path.abspath(self.paths["val"]),
                                  os.path.abspath(os.path.join(self.dir, "snapshots", "train")),
                                  1, self.snapshot_every, self.solver_overrides)
        staged_param = type(self.param)()
        staged_param.CopyFrom(self.param)
        staged_param.train_net = os.path.abspath(staged["train"])
        staged_param.test_net[0] = os.path.abspath(staged["val"])
        staged_solver = os.path.join(self.staging, os.path.basename(self.solver_path))
        atomic_write(staged_solver, text_format.MessageToString(staged_param))
        self.solver = caffe.get_solver(staged_solver)    # the class its `type` names (SGD by default)
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
        for name in sorted(os.listdir(self.staging)):
            os.replace(os.path.join(self.staging, name), os.path.join(self.dir, name))
        os.rmdir(self.staging)
        self.staging = None

    def discard(self):
        """Drop the staged files (the run directory keeps what it had)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
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
        """Continue from a .solverstate, checked first (Caffe aborts on one
        that does not fit). Its weights are the caffemodel of the same name
        beside it when there is one (a copied run directory resumes from its
        own weights), else the path the state names."""
        parsed = check_solverstate(state, self.solver.net, self.model.name, self.param.type)
        weights = state_weights(state, parsed)
        cleared = type(parsed)()
        cleared.CopyFrom(parsed)
        cleared.ClearField("learned_net")        # loaded below, checked, from `weights`
        with tempfile.TemporaryDirectory(prefix="fcn-resume-") as tmp:
            path = os.path.join(tmp, "state.solverstate")
            atomic_write(path, cleared.SerializeToString())
            self.solver.restore(path)
        missing = load_weights(self.solver.net, weights, warn=False)
        if missing:
            raise RunError(f"--resume: {weights} (the weights of {state}) has no parameters for "
                           f"layer(s) {', '.join(missing)} of {self.model.name}: weights of another model?")
        self.resumed_at = self.solver.iter
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
        """Step `iters` iterations, scoring every `score_every` (and at the end).

        The staged files are committed first. A failure mid-run (a bad
        image, a bad val label) snapshots the last good state and raises
        RunError saying where it is; the final weights (snapshot and
        final.caffemodel) are written before the final scoring, so a
        failure there keeps them."""
        self.commit()
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
        except (TrainingDiverged, KeyboardInterrupt):
            raise
        except Exception as exc:
            where = self._snapshot_after_error(start_iter)
            if isinstance(exc, USER_ERRORS):
                raise RunError(f"{one_line(exc)} -- {where}") from exc
            log(f"[{self.model.name}] {type(exc).__name__}: {where}")
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
        self.solver.snapshot()
        final = os.path.join(self.dir, "final.caffemodel")
        save_weights(self.solver.net, final)
        if iters:
            try:
                self.record(self.score(), log)
            except USER_ERRORS as exc:
                raise RunError(f"final scoring failed: {one_line(exc)} -- the trained weights are "
                               f"kept in {final} and {self.snapshot_path(self.solver.iter)}") from exc
        plot_curves(self.history, self.read_metrics(), os.path.join(self.dir, "curves.png"),
                    title=self.model.name)
        return final

    def snapshot_path(self, iteration, ext=".solverstate"):
        """Where Caffe writes the snapshot of `iteration`."""
        return f"{self.param.snapshot_prefix}_iter_{iteration}{ext}"

    def _snapshot_after_error(self, start_iter):
        """Snapshot the state after the last completed iteration (a failed
        step stops before its update); where it is, for the error."""
        if self.solver.iter == start_iter:
            return (f"stopped before completing an iteration of this run; "
                    f"nothing snapshotted (the run is at iteration {start_iter})")
        self.solver.snapshot()
        state = self.snapshot_path(self.solver.iter)
        return (f"stopped; the last good state (iteration {self.solver.iter}) is snapshotted as "
                f"{state} (continue with --resume {state})")

    def _drop_snapshot(self, iteration):
        for ext in (".caffemodel", ".solverstate"):
            path = self.snapshot_path(iteration, ext)
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


def set_aside(path):
    """Rename an existing `path` to the first free `path`.N (N = 1, 2, ...)."""
    if not os.path.exists(path):
        return None
    n = 1
    while os.path.exists(f"{path}.{n}"):
        n += 1
    os.replace(path, f"{path}.{n}")
    return f"{path}.{n}"


def keep_metrics_until(path, iteration):
    """Drop the metrics.jsonl lines after `iteration` (a resumed run redoes them)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line).get("iteration", 0) <= iteration]
    if len(kept) != len(lines):
        atomic_write(path, "".join(kept))


def read_solverstate(path):
    """Parse a binary .solverstate, naming the file on any failure."""
    from caffe.proto import caffe_pb2
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no solver state at {path}")
    if path.endswith(".h5"):
        raise RunError(f"--resume: {path}: HDF5 solver states are not supported; expected a "
                       "binary .solverstate")
    with open(path, "rb") as f:
        data = f.read()
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and its upb variants
        raise RunError(f"--resume: {path} ({len(data)} bytes) is not a readable .solverstate: "
                       f"truncated or corrupt ({exc})") from None
    if not state.learned_net:
        raise RunError(f"--resume: {path} ({len(data)} bytes) names no weights (learned_net): "
                       "empty, truncated or not a .solverstate")
    if state.iter < 0 or state.current_step < 0:
        raise RunError(f"--resume: {path} has iteration {state.iter}; expected a count >= 0")
    return state


def solverstate_iter(path):
    """The iteration a .solverstate was taken at."""
    return read_solverstate(path).iter


def check_solverstate(path, net, model_name="the model", solver_type="SGD"):
    """The parsed state of `path` once it is known to fit `net` (a train net):
    one history blob per learnable parameter blob, in order, with the same
    shapes -- two rounds of them for Adam and AdaDelta, which keep two
    moments (Caffe CHECK-fails, exit 134, on a wrong count)."""
    state = read_solverstate(path)
    expected = [(name, j, blob.data.shape) for name, blobs in net.params.items()
                for j, blob in enumerate(blobs)]
    expected *= HISTORY_ROUNDS.get(solver_type, 1)
    hint = "a state of another model or width, or a truncated file"
    if len(state.history) != len(expected):
        raise RunError(f"--resume: {path} holds {len(state.history)} history blobs; {model_name} "
                       f"at this width has {len(expected)} learnable blobs ({hint})")
    for blob, (name, j, shape) in zip(state.history, expected):
        got = blob_proto_shape(blob)
        count = len(blob.data) or len(blob.double_data)
        if tuple(got) != tuple(shape) or count != int(np.prod(shape)):
            raise RunError(f"--resume: {path}: the history of layer {name!r} blob {j} has shape "
                           f"{tuple(got)} ({count} values); expected {tuple(shape)} ({hint})")
    return state


def state_weights(path, state):
    """The caffemodel a state's weights are in: the file named like its
    learned_net beside the state when there is one, else learned_net itself."""
    stored = state.learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.basename(stored))
    if os.path.isfile(beside):
        return beside
    if os.path.isfile(stored):
        return stored
    raise RunError(f"--resume: the weights of {path} are missing: expected {beside} "
                   f"(beside the state) or {stored} (the path it names)")


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
