"""Train one FCN stage: prototxts -> solver -> initial weights -> SGD -> scores.

    python -m solvers.solve voc-fcn32s --weights weights/vgg16.caffemodel
    python -m solvers.solve voc-fcn16s --weights runs/voc-fcn32s/final.caffemodel
    python -m solvers.solve voc-fcn8s --resume runs/voc-fcn8s/snapshots/train_iter_4000.solverstate

Everything a run produces lands in runs/<model>/: the generated prototxts,
the solver definition, snapshots, metrics.jsonl, the learning curve and
final.caffemodel (the next stage's initialisation).
"""
import argparse
import json
import math
import os
import signal
import sys
import time

import numpy as np

import caffe
from google.protobuf import text_format

from net_specs import build, get_model
from net_specs.resolve import resolve
from net_specs.writer import atomic_write
from surgery.io import WeightsFile, save_weights
from surgery.bilinear import interp, upsampling_layers
from surgery.errors import SurgeryError
from surgery.recipe import initialise

from .config import solver_param
from .curves import plot_curves
from .score import score_net, set_device

SEED = 1337
METRIC_KEYS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


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
        self.model = get_model(model) if isinstance(model, str) else model
        self.dataset = dataset or self.model.get_dataset()
        self.dir = out_dir or os.path.join("runs", self.model.name)
        self.width, self.root = width, root
        self.check_data()
        os.makedirs(os.path.join(self.dir, "snapshots"), exist_ok=True)
        self.paths = {p: os.path.join(self.dir, f"{p}.prototxt") for p in ("train", "val", "deploy")}
        for phase, path in self.paths.items():
            proto = build(self.model, phase, dataset=self.dataset, root=root, width=width,
                          prefetch=prefetch, seed=seed)
            atomic_write(path, str(proto))
        self.solver_path = os.path.join(self.dir, "solver.prototxt")
        self.param = solver_param(self.model, os.path.abspath(self.paths["train"]),
                                  os.path.abspath(self.paths["val"]),
                                  os.path.abspath(os.path.join(self.dir, "snapshots", "train")),
                                  1, snapshot_every, solver_overrides)
        atomic_write(self.solver_path, text_format.MessageToString(self.param))
        self.solver = caffe.SGDSolver(self.solver_path)
        # The val split's size is known once its data layer has read the split.
        self.val_size = len(data_layer(self.solver.test_nets[0]).ids)
        self.param.test_iter[0] = self.val_size
        atomic_write(self.solver_path, text_format.MessageToString(self.param))
        self.metrics_path = os.path.join(self.dir, "metrics.jsonl")
        self.history = []

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
        late_fusion = len(self.model.init) > 1
        for source, path in zip(self.model.init, weights):
            suffix = source.rsplit("-", 1)[-1] if late_fusion else ""
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
        """(score, label, classes, present_only): SIFT Flow's semantic mean IU
        counts only the classes present in its test set."""
        siftflow = self.dataset.name == "siftflow"
        return [("score" + h.suffix, h.label, h.n_classes, siftflow and h.suffix == "_sem")
                for h in self.dataset.heads]

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
        plot_curves(self.history, self._read_metrics(), os.path.join(self.dir, "curves.png"),
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

    def _read_metrics(self):
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]


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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m solvers.solve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    dev = parser.add_mutually_exclusive_group()
    dev.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    dev.add_argument("--cpu", action="store_true", help="force CPU")
    dev.add_argument("--gpus", help="comma-separated GPU ids: data-parallel training via NCCL")
    parser.add_argument("--weights", nargs="+", help="initial caffemodel(s), one per model.init")
    parser.add_argument("--resume", help="a .solverstate to continue from")
    parser.add_argument("--iters", type=int, help="iterations to run (default: the solver's max_iter)")
    parser.add_argument("--score-every", type=int, default=4000, help="score on val every N iterations")
    parser.add_argument("--snapshot-every", type=int, default=4000)
    parser.add_argument("--out", help="run directory (default runs/<model>)")
    parser.add_argument("--root", help="dataset directory (overrides the model's default)")
    parser.add_argument("--dataset", help="train a template (fcn8s, ...) on this dataset")
    parser.add_argument("--classes", type=int, help="class count (custom datasets)")
    parser.add_argument("--mean", help="BGR mean B,G,R (custom datasets)")
    parser.add_argument("--width", type=float, default=1.0, help="trunk width multiplier (default 1)")
    parser.add_argument("--base-lr", type=float, help="override the model's base learning rate")
    args = parser.parse_args(argv)
    try:
        model, dataset = resolve(args.model, args.dataset, args.classes, args.mean, root=args.root)
        if args.gpus:
            from .multigpu import train_multi_gpu
            return train_multi_gpu(args, model, dataset)
        set_device(None if args.cpu else args.gpu)
        if not args.resume:
            check_weights(model, args.weights)
        overrides = {"base_lr": args.base_lr} if args.base_lr is not None else None
        run = Run(model, args.out, width=args.width, dataset=dataset, root=args.root,
                  snapshot_every=args.snapshot_every, solver_overrides=overrides)
        if args.resume:
            run.resume(args.resume)
        else:
            run.init_from(args.weights)
        iters = args.iters if args.iters is not None else run.param.max_iter - run.solver.iter
        final = run.train(max(0, iters), args.score_every)
    except TrainingDiverged as exc:
        print(f"solvers.solve: error: {exc}", file=sys.stderr)
        hard_exit(3)
    except (ValueError, FileNotFoundError, SurgeryError) as exc:
        print(f"solvers.solve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"[{args.model}] done: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
