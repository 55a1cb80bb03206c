"""`make demo`: the whole FCN pipeline on an embedded synthetic default.

    python -m demo [--out runs/demo] [--seed 1337] [--quick]

1. write a synthetic segmentation set in the PASCAL VOC on-disk layout;
2. pre-train a narrow VGG16-shaped classifier (the ILSVRC VGG16 stand-in);
3. surgery, then FCN-32s -> FCN-16s -> FCN-8s with the same Run machinery
   and prototxt generator as the real models (narrower, fewer iterations,
   and Adam instead of SGD: see SCHEDULE);
4. a table of pixel acc / mean acc / mean IU / fwIU and seconds per stage
   against the chance level, results.json, predictions beside the ground
   truth, learning curves, and report/report.html for the final FCN-8s.
Deterministic on the CPU for a given seed and BLAS thread count; how far
the scores move across thread counts and seeds is measured by
`python -m demo.robustness` (docs/demo.md shows its latest table).
"""
import argparse
import json
import os
import sys
import time
from dataclasses import replace

import numpy as np

import caffe
from google.protobuf import text_format

from net_specs import NetConfig, classifier, get_model
from net_specs.datasets import VOC_MEAN, Dataset, Head, Source
from common.atomic import atomic_write
from common.cli import add_device_args, set_device
from common.errors import UserError
from common.seed import SEED
from solvers.training.metrics_file import read_metrics
from solvers.training.run import Run
from netio.nets import load_net, save_weights

from .layers import class_batch
from .predict import save_predictions, save_report
from .synthetic import CLASSES, chance_mean_iu, write_voc_layout

CLASSIFIER_SOLVER = dict(type="Adam", base_lr=3e-4, momentum=0.9, momentum2=0.999, weight_decay=0.0005,
                         lr_policy="poly", power=1.0)
CLASSIFIER_OBJECT_SCALE = 1.0  # objects as large as in the segmentation scenes
# The classifier's crops show their object near the middle, as ImageNet's
# mostly do: fc6 (a fully connected layer over the 7x7 pool5 grid) then
# learns one place, not 49, and in the FCN each fc6 window answers "what is
# at my centre". With objects anywhere, 400 iterations left the classifier
# at 0.78 held-out accuracy on seed 1339 (loss 0.59); centred, 1.00 on
# seeds 1337 and 1339.
CLASSIFIER_CROPS = dict(size=224, scale=CLASSIFIER_OBJECT_SCALE, centred=True)  # 224: VGG16's crop
HELD_OUT = 128                 # scenes the classifier's accuracy is measured on
INPUT_STD = 60.0               # spread of the mean-subtracted synthetic pixels, ~40, rounded up
WIDTH = 1 / 8                 # VGG16 channels 8..64, fc 512
STAGES = ("fcn32s", "fcn16s", "fcn8s")


def demo_dataset(root):
    voc = "layers.voc.VOCSegDataLayer"
    return Dataset("demo", "synthetic shapes in the VOC layout", VOC_MEAN,
                   (Head("label", len(CLASSES), CLASSES),),
                   train=Source(voc, root, "train"), val=Source(voc, root, "val"))


def he_init(net, rng, input_std):
    """Random (He et al.) weights and zero biases: the prototxts leave fillers
    at Caffe's zero default because FCNs start from transplanted weights.
    The first layer's weights are divided by `input_std`; the last layer
    starts at zero, so the first steps are not spent shrinking random,
    confidently wrong scores (an initial loss of ~3 instead of ln 4)."""
    layers = list(net.params.values())
    for i, blobs in enumerate(layers):
        w = blobs[0].data
        fan_in = int(np.prod(w.shape[1:]))
        scale = 0.0 if i == len(layers) - 1 else np.sqrt(2.0 / fan_in) / (input_std if i == 0 else 1.0)
        w[...] = rng.randn(*w.shape) * scale
        for b in blobs[1:]:
            b.data[...] = 0


def pretrain_classifier(out, iters, log, seed=SEED):
    """Train the narrow VGG16 classifier; returns (deploy prototxt, caffemodel)."""
    params = json.dumps(dict(batch=8, seed=seed, **CLASSIFIER_CROPS))
    train = classifier("vgg16-ilsvrc", width=WIDTH, n_classes=len(CLASSES) - 1,
                       data_layer=("demo.layers", "SyntheticClassLayer", params))
    deploy = classifier("vgg16-ilsvrc", width=WIDTH, n_classes=len(CLASSES) - 1, batch=1)
    paths = {name: os.path.join(out, f"{name}.prototxt") for name in ("train", "deploy", "solver")}
    atomic_write(paths["train"], str(train))
    atomic_write(paths["deploy"], str(deploy))
    solver = caffe.proto.caffe_pb2.SolverParameter(
        train_net=os.path.abspath(paths["train"]), max_iter=iters, display=0, **CLASSIFIER_SOLVER,
        snapshot_prefix=os.path.abspath(os.path.join(out, "snap")), random_seed=seed)
    atomic_write(paths["solver"], text_format.MessageToString(solver))
    sgd = caffe.get_solver(paths["solver"])
    he_init(sgd.net, np.random.RandomState(seed), INPUT_STD)
    t0, losses = time.time(), []
    for i in range(iters):
        sgd.step(1)
        losses.append(float(sgd.net.blobs["loss"].data))
        if (i + 1) % 20 == 0 or i + 1 == iters:
            log(f"[classifier] iter {i + 1}/{iters}  loss {np.mean(losses[-20:]):.3f}  "
                f"{(i + 1) * 8 / (time.time() - t0):.1f} img/s")
    weights = os.path.join(out, "vgg16-narrow.caffemodel")
    save_weights(sgd.net, weights)
    return paths["deploy"], weights


def classifier_accuracy(deploy, weights, seed, n=HELD_OUT, batch=16):
    """Top-1 accuracy of the stand-in classifier on `n` held-out scenes (the
    training crops' kind, from a stream of its own): an FCN can only be as good as the
    features it starts from, so the demo says how good they are."""
    net = load_net(deploy, weights)
    rng = np.random.RandomState([seed, 1])        # not the training stream (seed alone)
    correct = 0
    for start in range(0, n, batch):
        data, labels = class_batch(rng, min(batch, n - start), **CLASSIFIER_CROPS)
        net.blobs["data"].reshape(*data.shape)
        net.blobs["data"].data[...] = data
        correct += int((net.forward()["prob"].argmax(1) == labels).sum())
    return correct / n


# The demo's configuration: Adam (Caffe's `type: "Adam"`), a rate and a length
# per stage, each decaying to zero (poly). Why these, and what was tried before
# them, with the numbers: docs/demo.md, "The schedule".
SCHEDULE = {
    "full": {"train": 200, "val": 60, "classifier": 400,
             "fcn32s": (1600, 3e-4), "fcn16s": (300, 1e-4), "fcn8s": (800, 1e-3)},
    "quick": {"train": 24, "val": 8, "classifier": 20,
              "fcn32s": (30, 3e-4), "fcn16s": (10, 1e-4), "fcn8s": (10, 1e-3)},
}
IMAGE_SIZE = (128, 128)
FCN_SOLVER = dict(type="Adam", momentum=0.9, momentum2=0.999, lr_policy="poly", power=1.0)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("runs", "demo"))
    parser.add_argument("--quick", action="store_true", help="a few iterations only (tests)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help=f"seed of the data, the initial weights and the data order (default {SEED})")
    add_device_args(parser)
    args = parser.parse_args(argv)
    try:
        set_device(args.gpu)
    except UserError as exc:
        parser.exit(2, f"python -m demo: error: {exc}\n")
    caffe.set_random_seed(args.seed)
    log = print
    plan = SCHEDULE["quick" if args.quick else "full"]
    t_start = time.time()
    seconds = {}
    os.makedirs(args.out, exist_ok=True)

    root = os.path.join(args.out, "data", "VOCsynthetic")
    log(f"[demo] 1/4 synthetic dataset (VOC layout, seed {args.seed}) -> {root}")
    write_voc_layout(root, n_train=plan["train"], n_val=plan["val"], size=IMAGE_SIZE, seed=args.seed)
    dataset = demo_dataset(root)
    chance = chance_mean_iu(root)
    log(f"[demo] chance level (all background) mean IU on val: {chance:.4f}")

    log("[demo] 2/4 pre-training the narrow VGG16 classifier (ILSVRC stand-in)")
    t0 = time.time()
    cls_deploy, cls_weights = pretrain_classifier(os.path.join(args.out, "classifier"),
                                                  plan["classifier"], log, seed=args.seed)
    cls_accuracy = classifier_accuracy(cls_deploy, cls_weights, args.seed)
    seconds["classifier"] = time.time() - t0
    log(f"[demo] classifier: {seconds['classifier']:.0f} s; top-1 accuracy on {HELD_OUT} held-out "
        f"scenes {cls_accuracy:.3f} (chance {1 / (len(CLASSES) - 1):.2f})")

    log("[demo] 3/4 surgery + FCN-32s -> FCN-16s -> FCN-8s")
    results, weights = {}, [cls_weights]
    for stage in STAGES:
        t0 = time.time()
        iters, lr = plan[stage]
        net = NetConfig(replace(get_model(stage), name=f"demo-{stage}"), dataset, width=WIDTH,
                        seed=args.seed)
        run = Run.open(net, out_dir=os.path.join(args.out, stage),
                       solver_overrides=dict(FCN_SOLVER, base_lr=lr, max_iter=iters),
                       snapshot_every=max(iters, 1))
        run.init_from(weights)
        final = run.train(iters, score_every=max(iters // 2, 1), display=max(iters // 10, 1))
        results[stage] = run.read_metrics()[-1]
        weights = [final]
        del run
        seconds[stage] = time.time() - t0
        log(f"[demo] {stage}: {seconds[stage]:.0f} s")

    log("[demo] 4/4 predictions")
    t0 = time.time()
    save_predictions(args.out, net, weights[0], log)
    save_report(args.out, net, weights[0],
                read_metrics(os.path.join(args.out, STAGES[-1], "metrics.jsonl")), log)
    seconds["predictions"] = time.time() - t0
    seconds["total"] = time.time() - t_start

    log("")
    log(f"{'stage':<8} {'pixel acc':>9} {'mean acc':>9} {'mean IU':>8} {'fwIU':>7} {'seconds':>8}"
        f"   (chance mean IU {chance:.3f})")
    for stage, m in results.items():
        log(f"{stage:<8} {m['pixel_acc']:>9.4f} {m['mean_acc']:>9.4f} {m['mean_iu']:>8.4f} "
            f"{m['fw_iu']:>7.4f} {seconds[stage]:>8.0f}")
    log(f"(classifier pre-training {seconds['classifier']:.0f} s, top-1 accuracy {cls_accuracy:.3f}; "
        f"predictions {seconds['predictions']:.0f} s)")
    atomic_write(os.path.join(args.out, "results.json"),
                 json.dumps(dict(seed=args.seed, blas_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
                                 chance_mean_iu=chance, classifier_accuracy=cls_accuracy,
                                 stages=results, seconds=seconds), indent=2))
    log(f"[demo] done in {seconds['total']:.0f} s; outputs under {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
