"""Segmentation scoring as the FCN papers report it, and the scoring CLI.

    python -m solvers.score MODEL WEIGHTS [--split SPLIT] [--root PATH]
                            [--cpu | --gpu N] [--out metrics.json]

Metrics (Long, Shelhamer, Darrell, CVPR 2015 / PAMI 2016), from a confusion
matrix `hist` (rows ground truth, columns prediction) accumulated over the
whole evaluation set -- never averaged per image:

    pixel accuracy      sum_i n_ii / sum_ij n_ij
    mean accuracy       mean_i  n_ii / t_i                      (t_i = sum_j n_ij)
    mean IU             mean_i  n_ii / (t_i + sum_j n_ji - n_ii)
    frequency weighted  sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii) / sum_k t_k

A class with no ground-truth pixels has no accuracy; a class absent from
both ground truth and prediction has no IU. Both are nan per class and
left out of the means (the reference's nanmean), computed here without
0/0 warnings. A class absent from the ground truth but predicted somewhere
has IU 0 and, by the reference's convention, counts in mean IU.

`present_only=True` restricts the class means to classes that occur in the
ground truth of the evaluation set. The reference SIFT Flow numbers averaged
the semantic head over all 33 classes although several never occur in the
test split (a known issue of its evaluation); this CLI scores the SIFT Flow
semantic head present-only by default (`--all-classes` gives the reference
behaviour). Pixels whose label is outside [0, n_classes) -- the ignore label
255 included -- are not counted at all.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np

METRIC_KEYS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
METRIC_NAMES = {"pixel_acc": "pixel accuracy", "mean_acc": "mean accuracy",
                "mean_iu": "mean IU", "fw_iu": "frequency weighted IU"}


class ScoreError(Exception):
    """A model, weight file or dataset the scorer cannot use; reported as a message."""


# --------------------------------------------------------------------- metrics

def fast_hist(label, pred, n):
    """n x n confusion matrix (rows truth, columns prediction), int64.

    Pixels whose label is not in [0, n) -- 255, negatives, anything larger --
    are ignored. `label` and `pred` are arrays of the same size (any shape,
    any numeric dtype); predictions must lie in [0, n).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive class count, got {n}")
    label = np.asarray(label).ravel()
    pred = np.asarray(pred).ravel()
    if label.size != pred.size:
        raise ValueError(f"label and prediction differ in size: {label.size} vs {pred.size}")
    keep = (label >= 0) & (label < n)
    label = label[keep].astype(np.int64)
    pred = pred[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= n):
        raise ValueError(f"predictions must lie in [0, {n}), got values in "
                         f"[{pred.min()}, {pred.max()}]")
    pred = pred.astype(np.int64)
    return np.bincount(n * label + pred, minlength=n * n).reshape(n, n)


def _ratio(num, den):
    """num / den elementwise, nan where den == 0, without a warning."""
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean(values, mask):
    return float(values[mask].mean()) if mask.any() else float("nan")


def metrics(hist, present_only=False):
    """The papers' metrics of a confusion matrix, as a dict.

    Keys: pixel_acc, mean_acc, mean_iu, fw_iu (floats, nan when undefined,
    e.g. an empty matrix), per_class_iu and per_class_acc (lists of floats,
    nan for undefined classes), n_pixels, n_classes_counted (classes in the
    mean IU), present_only. With `present_only` the class means count only
    classes that occur in the ground truth (rows with pixels).
    """
    hist = np.asarray(hist, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"hist must be a square matrix, got shape {hist.shape}")
    total = hist.sum()
    diag = np.diag(hist)
    truth = hist.sum(1)
    predicted = hist.sum(0)
    union = truth + predicted - diag
    in_truth = truth > 0
    counted = in_truth if present_only else union > 0

    class_acc = _ratio(diag, truth)                 # nan: class not in the ground truth
    iu = _ratio(diag, union)                        # nan: class in neither
    pixel_acc = float(diag.sum() / total) if total > 0 else float("nan")
    if total > 0:
        freq = truth / total
        fw_iu = float((freq[in_truth] * iu[in_truth]).sum())
    else:
        fw_iu = float("nan")
    return {
        "pixel_acc": pixel_acc,
        "mean_acc": _mean(class_acc, in_truth),     # the same with or without present_only
        "mean_iu": _mean(iu, counted),
        "fw_iu": fw_iu,
        "per_class_iu": [float(x) for x in iu],
        "per_class_acc": [float(x) for x in class_acc],
        "n_pixels": int(total),
        "n_classes_counted": int(counted.sum()),
        "present_only": bool(present_only),
    }


# ---------------------------------------------------------------- net scoring

def _head_specs(heads, present_only):
    specs = []
    for head in heads:
        if isinstance(head, dict):
            head = (head["score"], head["label"], head["n_classes"],
                    head.get("present_only", present_only))
        head = tuple(head)
        if len(head) == 3:
            head = head + (present_only,)
        if len(head) != 4:
            raise ValueError("a head is (score top, label top, n_classes[, present_only]), "
                             f"got {head!r}")
        score, label, n, only = head
        specs.append((str(score), str(label), int(n), bool(only)))
    return specs


def loss_blob_names(net):
    """The net's scalar outputs (SoftmaxWithLoss tops: loss, loss_geo, ...)."""
    return [name for name in net.outputs if net.blobs[name].data.size == 1]


def score_net(net, n_iter, heads, present_only=False, loss_blobs=None, progress=None):
    """Run a val net forward `n_iter` times and score its heads.

    `heads`: iterable of (score top, label top, n_classes) or
    (score top, label top, n_classes, present_only); the 3-tuple form takes
    the `present_only` argument. Each forward may carry a batch: every image
    of `score` (N x C x H x W, argmax over C) is compared with `label`
    (N x 1 x H x W). `loss_blobs` defaults to the net's scalar outputs.
    `progress(i, n_iter)` is called after each iteration.

    Returns {"heads": {score top: metrics(...) + {"hist": n x n list}},
             "loss": mean over iterations of the summed losses (None without
             loss blobs), "losses": {blob: mean}, "n_iter": n_iter}.
    """
    specs = _head_specs(heads, present_only)
    if not specs:
        raise ValueError("score_net needs at least one head")
    for score, label, _, _ in specs:
        for top in (score, label):
            if top not in net.blobs:
                raise ValueError(f"the net has no blob {top!r}; blobs: {', '.join(net.blobs)}")
    n_iter = int(n_iter)
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    loss_blobs = loss_blob_names(net) if loss_blobs is None else list(loss_blobs)
    hists = {score: np.zeros((n, n), np.int64) for score, _, n, _ in specs}
    losses = {name: 0.0 for name in loss_blobs}
    for i in range(n_iter):
        net.forward()
        for score, label, n, _ in specs:
            scores = net.blobs[score].data
            labels = net.blobs[label].data
            if scores.ndim != 4 or scores.shape[1] != n:
                raise ValueError(f"blob {score!r} has shape {scores.shape}, expected N x {n} x H x W")
            pred = scores.argmax(axis=1)
            if labels.size != pred.size:
                raise ValueError(f"label blob {label!r} {labels.shape} does not match "
                                 f"score blob {score!r} {scores.shape}")
            hists[score] += fast_hist(labels.reshape(pred.shape), pred, n)
        for name in loss_blobs:
            losses[name] += float(net.blobs[name].data.flat[0])
        if progress is not None:
            progress(i + 1, n_iter)
    results = {}
    for score, _, _, only in specs:
        result = metrics(hists[score], present_only=only)
        result["hist"] = hists[score].tolist()
        results[score] = result
    mean_losses = {name: total / n_iter for name, total in losses.items()}
    return {"heads": results,
            "loss": sum(mean_losses.values()) if mean_losses else None,
            "losses": mean_losses,
            "n_iter": n_iter}


# -------------------------------------------------------------- weight files

def read_weights(path):
    """Parse a .caffemodel, or raise ScoreError naming it (Caffe would abort)."""
    from surgery.errors import SurgeryError
    from surgery.io import read_weights as parse
    try:
        return parse(path)
    except SurgeryError as exc:
        raise ScoreError(str(exc)) from None


def load_weights(net, path, warn=True):
    """Copy a .caffemodel into `net` after checking it cannot make Caffe abort;
    returns the net's parameter layers the file does not cover."""
    from surgery.errors import SurgeryError
    from surgery.io import check_weights_fit, weight_layers
    param = read_weights(path)
    try:
        check_weights_fit(net, param, path)
    except SurgeryError as exc:
        raise ScoreError(f"{exc} (weights of another model or width?)") from None
    stored = {layer.name for layer in weight_layers(param) if layer.blobs}
    wanted = [name for name, layer in zip(net._layer_names, net.layers) if len(layer.blobs)]
    if not stored & set(wanted):
        raise ScoreError(f"{path}: no layer of the weights file matches the net "
                         "(weights of another model?)")
    missing = [name for name in wanted if name not in stored]
    if missing and warn:
        print(f"warning: {path} has no parameters for layer(s) {', '.join(missing)}; "
              "they keep their initial values", file=sys.stderr)
    net.copy_from(path)
    return missing


# ------------------------------------------------------------------- the CLI

def split_size(net, dataset, root, split):
    """Number of ids in the evaluation split: from the data layer, else the split file."""
    for layer in net.layers:
        for attr in ("indices", "ids"):
            value = getattr(layer, attr, None)
            if isinstance(value, (list, tuple)) and value:
                return len(value)
        if hasattr(type(layer), "__len__"):
            try:
                if len(layer):
                    return len(layer)
            except TypeError:
                pass
    candidates = [os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"),
                  os.path.join(root, f"{split}.txt"),
                  os.path.join(root, "ImageSets", f"{split}.txt")]
    for path in candidates:
        if os.path.isfile(path):
            with open(path) as f:
                n = sum(1 for line in f if line.strip())
            if n:
                return n
    raise ScoreError(f"cannot tell how many images split {split!r} of {dataset.name} has: "
                     f"no split file among {', '.join(candidates)}")


def parse_width(text):
    """--width: a positive number or fraction such as 1/16."""
    try:
        width = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"--width must be a number or fraction like 1/16, "
                                         f"got {text!r}") from None
    if width <= 0:
        raise argparse.ArgumentTypeError(f"--width must be positive, got {text!r}")
    return width


def resolve_model(name, classes=None, mean=None, class_names=None):
    """(Model, Dataset) for a model or template name and the CLI's overrides."""
    from net_specs.resolve import resolve
    try:
        return resolve(name, classes=classes, mean=mean, class_names=class_names)
    except ValueError as exc:
        raise ScoreError(str(exc)) from None


def class_names_of(head):
    names = list(head.class_names)
    return names + [f"class {i}" for i in range(len(names), head.n_classes)]


def format_table(results, dataset):
    """Plain-text report: the four metrics per head, then per-class IU with names."""
    lines = []
    for head in dataset.heads:
        r = results["heads"]["score" + head.suffix]
        title = f"{dataset.name} {head.label}" if len(dataset.heads) > 1 else dataset.name
        note = " (classes present in the ground truth only)" if r["present_only"] else ""
        lines.append(f"== {title}: {head.n_classes} classes, {r['n_pixels']} pixels{note}")
        for key in METRIC_KEYS:
            lines.append(f"  {METRIC_NAMES[key]:<22} {_pct(r[key])}")
        lines.append(f"  {'class':<22} {'IU':>7} {'acc':>7}")
        for name, iu, acc in zip(class_names_of(head), r["per_class_iu"], r["per_class_acc"]):
            lines.append(f"  {name:<22} {_pct(iu)} {_pct(acc)}")
    if results.get("loss") is not None:
        lines.append(f"mean loss {results['loss']:.6g} over {results['n_iter']} iterations")
    return "\n".join(lines)


def _pct(x):
    return f"{'n/a':>7}" if x is None or math.isnan(x) else f"{100 * x:7.2f}"


def _json_safe(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def to_json(results, model, dataset, weights, split):
    """The JSON report (nan written as null)."""
    heads = {}
    for head in dataset.heads:
        r = dict(results["heads"]["score" + head.suffix])
        r["class_names"] = class_names_of(head)
        heads[head.label] = r
    doc = {"model": model.name, "dataset": dataset.name, "split": split,
           "weights": os.path.abspath(weights), "n_images": results["n_iter"],
           "loss": results["loss"], "losses": results["losses"], "heads": heads}
    return json.dumps(_json_safe(doc), indent=1, sort_keys=True) + "\n"


def set_device(gpu):
    import caffe
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(int(gpu))
        caffe.set_mode_gpu()


def score_model(model, dataset, weights, split=None, root=None, present_only=None,
                width=1.0, progress=None, n_iter=None):
    """Build `model`'s val net on `dataset` (split/root overrides), load
    `weights` and score the whole split. `present_only=None`: only the SIFT
    Flow semantic head is scored present-only. Returns score_net's dict plus
    "split"."""
    from dataclasses import replace
    import caffe
    from net_specs import build
    from net_specs.writer import atomic_write

    if split:
        dataset = replace(dataset, val=replace(dataset.val, split=split))
    split = dataset.val.split
    root = root or dataset.val.root
    read_weights(weights)                     # fail fast, before any data is read
    if not os.path.isdir(root):
        hint = f" (`make {dataset.fetch_target}` downloads it)" if dataset.fetch_target else ""
        raise ScoreError(f"dataset directory not found: {root}{hint}")
    proto = build(model, "val", dataset=dataset, root=root, width=width)
    with tempfile.TemporaryDirectory(prefix="fcn-score-") as tmp:
        path = os.path.join(tmp, "val.prototxt")
        atomic_write(path, str(proto))
        try:
            net = caffe.Net(path, caffe.TEST)
        except Exception as exc:
            raise ScoreError(f"cannot open split {split!r} of {dataset.name} at {root}: "
                             f"{type(exc).__name__}: {exc}") from None
    load_weights(net, weights)
    if n_iter is None:
        n_iter = split_size(net, dataset, root, split)
    heads = []
    for head in dataset.heads:
        only = present_only
        if only is None:
            only = dataset.name == "siftflow" and head.suffix == "_sem"
        heads.append(("score" + head.suffix, head.label, head.n_classes, only))
    results = score_net(net, n_iter, heads, progress=progress)
    results["split"] = split
    return results


def _progress_printer(every, stream=None):
    start = time.time()

    def progress(i, n):
        if i % every == 0 or i == n:
            rate = i / max(time.time() - start, 1e-9)
            print(f"scored {i}/{n} images ({rate:.2f} img/s)", file=stream or sys.stderr,
                  flush=True)
    return progress


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m solvers.score",
        description="Score a trained FCN on a whole evaluation split "
                    "(pixel acc, mean acc, mean IU, frequency weighted IU, per-class IU).",
        epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name (`python -m net_specs list`) or template")
    parser.add_argument("weights", help=".caffemodel to score")
    parser.add_argument("--split", help="evaluation split (default: the dataset's val split)")
    parser.add_argument("--root", help="dataset directory (default: the dataset's location)")
    dev = parser.add_mutually_exclusive_group()
    dev.add_argument("--cpu", action="store_true", help="run on the CPU (default)")
    dev.add_argument("--gpu", type=int, metavar="N", help="run on GPU N")
    parser.add_argument("--out", help="write the metrics as JSON here (atomically)")
    parser.add_argument("--all-classes", action="store_true",
                        help="SIFT Flow: average the semantic head over all 33 classes as the "
                             "reference did (default: classes present in the ground truth)")
    parser.add_argument("--classes", type=int, help="class count (custom datasets / templates)")
    parser.add_argument("--mean", help="BGR mean B,G,R (custom datasets)")
    parser.add_argument("--class-names", help="comma-separated class names (custom datasets)")
    parser.add_argument("--width", type=parse_width, default=1.0,
                        help="trunk width of narrowed test/demo nets, e.g. 1/16 (default 1)")
    parser.add_argument("--every", type=int, default=50, metavar="K",
                        help="progress line every K images (default 50)")
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        model, dataset = resolve_model(args.model, args.classes, args.mean, args.class_names)
        set_device(args.gpu)
        results = score_model(model, dataset, args.weights, args.split, args.root,
                              present_only=False if args.all_classes else None,
                              width=args.width, progress=_progress_printer(max(1, args.every)))
        print(f"{model.name} on {dataset.name} {results['split']} ({results['n_iter']} images), "
              f"weights {args.weights}")
        print(format_table(results, dataset))
        if args.out:
            from net_specs.writer import atomic_write
            atomic_write(args.out, to_json(results, model, dataset, args.weights, results["split"]))
            print(f"wrote {args.out}")
    except ScoreError as exc:
        print(f"solvers.score: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
