"""Scoring nets: forward a val net over a split, confusion matrices per
head, the papers' metrics (solvers.scoring.metrics) and the mean losses."""
import os

import numpy as np

from common.errors import UserError
from net_specs import NetConfig, build
from netio.nets import Caffemodel, load_weights, net_from_param

from ..inference import tta
from ..inference.stitching import DEFAULT_MAX_PIXELS
from .metrics import fast_hist, metrics
from .per_image import ImageTally


class ScoreError(UserError):
    """A model, split or dataset the scorer cannot use; reported as a message."""


def dataset_heads(dataset, present_only=None):
    """score_net's heads of a dataset record: (score top, label top, classes,
    present_only), present_only from the record (Head.present_only) unless
    forced True/False."""
    return [("score" + h.suffix, h.label, h.n_classes,
             h.present_only if present_only is None else bool(present_only))
            for h in dataset.heads]


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


def score_net(net, n_iter, heads, present_only=False, loss_blobs=None, progress=None,
              predict=None, images=None):
    """Run a val net forward `n_iter` times and score its heads.

    `heads`: iterable of (score top, label top, n_classes) or
    (score top, label top, n_classes, present_only); the 3-tuple form takes
    the `present_only` argument. Each forward may carry a batch: every image
    of `score` (N x C x H x W, argmax over C) is compared with `label`
    (N x 1 x H x W). `loss_blobs` defaults to the net's scalar outputs.
    `progress(i, n_iter)` is called after each iteration. `predict(inputs)`,
    given, replaces the net's own forward past its data layer (test-time
    augmentation): {input top: C x H x W} -> {score top: C x H x W}, batch 1,
    and no loss is computed. `images` (a per_image.ImageTally) keeps each
    image's metrics and the worst and best images.

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
    loss_blobs = [] if predict else loss_blob_names(net) if loss_blobs is None else list(loss_blobs)
    inputs = [t for t in net.top_names[net._layer_names[0]] if t not in {s[1] for s in specs}]
    hists = {score: np.zeros((n, n), np.int64) for score, _, n, _ in specs}
    losses = {name: 0.0 for name in loss_blobs}
    for i in range(n_iter):
        if predict is None:
            net.forward()
            outputs = {score: net.blobs[score].data for score, _, _, _ in specs}
        else:
            net.forward(end=net._layer_names[0])            # the data layer only
            outputs = {k: v[None] for k, v in predict({t: net.blobs[t].data[0] for t in inputs}).items()}
        for score, label, n, _ in specs:
            scores = outputs[score]
            labels = net.blobs[label].data
            if scores.ndim != 4 or scores.shape[1] != n:
                raise ValueError(f"blob {score!r} has shape {scores.shape}, expected N x {n} x H x W")
            if not np.isfinite(scores).all():
                raise ScoreError(f"blob {score!r} holds non-finite values (NaN/inf) at image "
                                 f"{i + 1} of {n_iter}: the weights are diverged or corrupt; "
                                 "no metrics reported (their argmax would score as class 0)")
            pred = scores.argmax(axis=1)
            if labels.size != pred.size:
                raise ValueError(f"label blob {label!r} {labels.shape} does not match "
                                 f"score blob {score!r} {scores.shape}")
            truth = labels.reshape(pred.shape)
            hists[score] += images.add(net, score, truth, pred, n) if images else fast_hist(truth, pred, n)
        for name in loss_blobs:
            losses[name] += float(net.blobs[name].data.flat[0])
        if progress is not None:
            progress(i + 1, n_iter)
    results = {}
    for score, _, _, only in specs:
        result = metrics(hists[score], present_only=only)
        result["hist"] = hists[score].tolist()
        if images:
            result["images"] = images.records[score]
        results[score] = result
    mean_losses = {name: total / n_iter for name, total in losses.items()}
    return {"heads": results,
            "loss": sum(mean_losses.values()) if mean_losses else None,
            "losses": mean_losses,
            "n_iter": n_iter}


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


def score_model(net, weights, present_only=None, progress=None, n_iter=None,
                scales=tta.PLAIN, flip=False, gallery=0, max_pixels=DEFAULT_MAX_PIXELS):
    """Build the val net of `net` (a NetConfig: model, dataset, width, data
    root, NetConfig.with_val_split for another split; or a model name), load
    `weights` and score the whole split. `present_only=None`: each head as
    its record says (Head.present_only: SIFT Flow's semantic head); True or
    False: every head so. `scales`/`flip`: test-time augmentation (solvers.inference.tta)
    through the deploy net, copies over `max_pixels` in tiles. `gallery` > 0:
    per-image results in each head ("images") and "galleries" ({head label:
    per_image.Gallery} of that many worst and best images). Returns
    score_net's dict plus "split"."""
    net = NetConfig.of(net)
    dataset = net.dataset
    split = dataset.val.split
    root = net.data_root(dataset.val)
    caffemodel = Caffemodel(weights)          # fail fast, before any data is read
    if not os.path.isdir(root):
        hint = f" (`make {dataset.fetch_target}` downloads it)" if dataset.fetch_target else ""
        raise ScoreError(f"dataset directory not found: {root}{hint}")
    proto = build(net, "val")
    try:
        val_net = net_from_param(proto)
    except Exception as exc:
        raise ScoreError(f"cannot open split {split!r} of {dataset.name} at {root}: "
                         f"{type(exc).__name__}: {exc}") from None
    load_weights(val_net, caffemodel)
    if n_iter is None:
        n_iter = split_size(val_net, dataset, root, split)
    heads = dataset_heads(dataset, present_only)
    predict = None
    if not tta.is_plain(scales, flip):
        deploy = build(net, "deploy", size=(64, 64))
        deploy_net = net_from_param(deploy, weights=caffemodel, warn=False)
        run = tta.deploy_runner(deploy_net, deploy, net.inputs.names,
                                [h[0] for h in heads], max_pixels)

        def predict(inputs):
            return tta.augmented_scores(run, inputs, scales, flip)
    images = ImageTally.for_dataset(dataset, gallery) if gallery else None
    results = score_net(val_net, n_iter, heads, progress=progress, predict=predict, images=images)
    results["split"] = split
    if predict:
        results["tta"] = {"scales": list(scales), "flip": bool(flip)}
    if images:
        results["galleries"] = {h.label: images.galleries["score" + h.suffix] for h in dataset.heads}
    return results
