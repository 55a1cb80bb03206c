"""The scoring CLI and its report: a trained FCN on a whole evaluation split.

    python -m solvers.score MODEL WEIGHTS [--split SPLIT] [--root PATH]
                            [--cpu | --gpu N] [--out scores.json] [--curves metrics.jsonl]
                            [--scales 0.5,0.75,1,1.25,1.5] [--flip]

With --out, report.html (solvers.scoring.report_html) and its pictures are written
beside the JSON.

The metrics and their definitions are in solvers.scoring.metrics, net scoring in
solvers.scoring.evaluate. Exit status: 0 scored; 2 a bad flag, file or model (one
line on stderr).
"""
import argparse
import json
import math
import os
import sys
import time

from common.atomic import atomic_write
from common.cli import add_device_args, add_model_args, int_at_least, run_cli, set_device
from common.outputs import check_file

from net_specs.resolve import resolve_args

from .evaluate import ScoreError, score_model, score_net, split_size  # noqa: F401  (the API)
from .metrics import METRIC_KEYS, METRIC_NAMES, fast_hist, metrics  # noqa: F401
from .per_image import GALLERY_SIZE
from .report_html import read_jsonl, write_report
from ..inference.tta import add_tta_args, is_plain

DESCRIPTION = ("Score a trained FCN on a whole evaluation split "
               "(pixel acc, mean acc, mean IU, frequency weighted IU, per-class IU).")
EPILOG = """Metrics follow Long, Shelhamer, Darrell (CVPR 2015 / PAMI 2016), from one
confusion matrix over the whole split (see solvers/scoring/metrics.py). A class mean
runs over the classes in ground truth or prediction, as the reference's
did; a head whose record says so (SIFT Flow's semantic head) is scored over
classes present in the ground truth only, unless --all-classes."""


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
        for name, iu, acc in zip(head.display_names(), r["per_class_iu"], r["per_class_acc"]):
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


def to_json(results, net, weights, split):
    """The JSON report of `net` (a NetConfig) scored (nan written as null)."""
    model, dataset = net.model, net.dataset
    heads = {}
    for head in dataset.heads:
        r = dict(results["heads"]["score" + head.suffix])
        r["class_names"] = head.display_names()
        heads[head.label] = r
    doc = {"model": model.name, "dataset": dataset.name, "split": split,
           "weights": os.path.abspath(weights), "n_images": results["n_iter"],
           "loss": results["loss"], "losses": results["losses"], "heads": heads}
    if results.get("tta"):
        doc["tta"] = results["tta"]                 # test-time augmentation's scales and flip
    return json.dumps(_json_safe(doc), indent=1, sort_keys=True) + "\n"


def _progress_printer(every, stream=None):
    start = time.time()

    def progress(i, n):
        if i % every == 0 or i == n:
            rate = i / max(time.time() - start, 1e-9)
            print(f"scored {i}/{n} images ({rate:.2f} img/s)", file=stream or sys.stderr,
                  flush=True)
    return progress


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m solvers.score", description=DESCRIPTION,
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name (`python -m net_specs list`) or template")
    parser.add_argument("weights", help=".caffemodel to score")
    parser.add_argument("--split", help="evaluation split (default: the dataset's val split)")
    add_device_args(parser)
    parser.add_argument("--out", help="write the metrics as JSON here (atomically), and "
                        "report.html with its pictures beside it")
    parser.add_argument("--curves", metavar="METRICS_JSONL",
                        help="a training run's metrics.jsonl: its curves go into report.html")
    add_tta_args(parser)
    parser.add_argument("--all-classes", action="store_true",
                        help="average every head over the classes in ground truth or prediction, "
                             "as the reference did (default: SIFT Flow's semantic head over the "
                             "classes present in the ground truth only)")
    add_model_args(parser)
    parser.add_argument("--every", type=int_at_least("--every", 1), default=50, metavar="K",
                        help="progress line every K images (default 50)")
    return run_cli("solvers.score", score_cli, parser.parse_args(argv), quiet_caffe=True)


def score_cli(args):
    net = resolve_args(args)
    model, dataset = net.model, net.dataset
    curves = read_jsonl(args.curves) if args.curves else ()       # a bad file fails before scoring
    if args.out:                                 # before minutes of scoring
        check_file(args.out, [("--weights", args.weights), ("--curves", args.curves)],
                   data_dirs=[("dataset directory", net.data_root(dataset.val))])
    set_device(args.gpu)
    results = score_model(net, args.weights,
                          present_only=False if args.all_classes else None,
                          progress=_progress_printer(args.every),
                          scales=args.scales, flip=args.flip, gallery=GALLERY_SIZE if args.out else 0)
    print(f"{model.name} on {dataset.name} {results['split']} ({results['n_iter']} images), "
          f"weights {args.weights}" + tta_note(args.scales, args.flip))
    print(format_table(results, dataset))
    if args.out:
        write_scores(args.out, to_json(results, net, args.weights, results["split"]),
                     results["galleries"], curves)
    return 0


def write_scores(path, doc, galleries, curves=()):
    """scores.json at `path` and report.html beside it."""
    atomic_write(path, doc)
    print(f"wrote {path}")
    print(f"wrote {write_report(os.path.dirname(os.path.abspath(path)), json.loads(doc), curves, galleries)}")


def tta_note(scales, flip):
    if is_plain(scales, flip):
        return ""
    return f"; test-time augmentation: scales {','.join(f'{s:g}' for s in scales)}" + (", flip" if flip else "")


if __name__ == "__main__":
    sys.exit(main())
