"""Score the released FCN caffemodels with our nets and metrics, side by side
with the score the authors report for each.

    python -m solvers.eval_published [MODEL ...] [--weights-dir DIR] [--root PATH]
                                     [--cpu | --gpu N] [--out results.json]
                                     [--scales 0.5,0.75,1,1.25,1.5] [--flip]

MODEL: released model names (`python -m surgery published`; default all 14).
Each is fetched on first use through the verified downloader (weights/published/),
scored on its dataset's evaluation split (solvers.scoring.evaluate, the same scoring
as `python -m solvers.score`), and printed as: paper mean IU, ours,
difference, with the split and the number of images scored beside the
paper's. Exit status: 0 all scored; 2 a bad flag, model, file or dataset.
"""
import argparse
import json
import math
import os
import sys

from common.atomic import atomic_write
from common.outputs import check_file
from common.cli import add_device_args, parse_width, run_cli, set_device
from common.errors import UserError
from net_specs import NetConfig
from surgery.download import download
from surgery.published import DIRECTORY, RELEASED_LIST, get_released

from .evaluate import score_model
from .per_image import GALLERY_SIZE
from .cli import to_json, tta_note, write_scores
from ..inference.tta import PLAIN, add_tta_args


def evaluate(released, net=None, weights_dir=DIRECTORY, progress=None,
             scales=PLAIN, flip=False, report_dir=None):
    """Fetch (or verify) one released model's weights and score it: a row
    dict. `net`: the released model's NetConfig (data root, width; default
    its own). `report_dir`: also write its scores.json and report.html there."""
    path = download(released.name, weights_dir)
    net = net or NetConfig.of(released.model)
    dataset = net.dataset
    split, paper_images = released.split
    results = score_model(net.with_val_split(split), path, progress=progress, scales=scales, flip=flip,
                          gallery=GALLERY_SIZE if report_dir else 0)
    if report_dir:
        write_scores(os.path.join(report_dir, "scores.json"),
                     to_json(results, net, path, split), results["galleries"])
    heads = {head.label: results["heads"]["score" + head.suffix]["mean_iu"]
             for head in dataset.heads}
    return {"model": released.model, "weights": path, "split": split,
            "images": results["n_iter"], "paper_images": paper_images,
            "paper_mean_iu": released.paper_mean_iu, "source": released.source,
            "mean_iu": {label: None if math.isnan(v) else 100 * v for label, v in heads.items()}}


def format_rows(rows):
    """The side-by-side table: one line per model and head."""
    lines = [f"{'model':<24} {'split':<11} {'images':>13} {'head':<6} "
             f"{'paper':>10} {'ours':>7} {'diff':>7}"]
    for row in rows:
        images = f"{row['images']} of {row['paper_images']}"
        for k, (label, ours) in enumerate(row["mean_iu"].items()):
            paper = row["paper_mean_iu"] if k == 0 else None
            ours_text = "n/a" if ours is None else f"{ours:.2f}"
            diff = "" if paper is None or ours is None else f"{ours - paper:+.2f}"
            lines.append(f"{row['model']:<24} {row['split']:<11} {images:>13} {label:<6} "
                         f"{'not stated' if paper is None else f'{paper:.1f}':>10} "
                         f"{ours_text:>7} {diff:>7}")
    partial = [r["model"] for r in rows if r["images"] != r["paper_images"]]
    if partial:
        lines.append(f"note: {', '.join(partial)} scored on a split of another size than the "
                     "paper's: the difference is not a reproduction check")
    lines.append("mean IU in percent; paper: the reference README's score for the released file "
                 "(VOC) or the CVPR 2015 table's for the same model (NYUDv2, SIFT Flow, "
                 "PASCAL-Context; `python -m surgery published`)")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m solvers.eval_published",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="released models (default: all 14; `python -m surgery published`)")
    parser.add_argument("--weights-dir", default=DIRECTORY,
                        help=f"where the released caffemodels are kept (default {DIRECTORY})")
    parser.add_argument("--root", help="dataset directory (default: each dataset's own)")
    parser.add_argument("--width", type=parse_width, default=1.0,
                        help="channel width multiplier of the nets (tests; default 1)")
    parser.add_argument("--out", help="also write the rows as JSON here (atomically), and each "
                        "model's scores.json and report.html into <this folder>/<model>/")
    add_device_args(parser)
    add_tta_args(parser)
    return run_cli("solvers.eval_published", eval_cli, parser.parse_args(argv), quiet_caffe=True)


def eval_cli(args):
    releases = [get_released(name) for name in args.models] or RELEASED_LIST
    datasets = {r.dataset for r in releases}
    if args.root and len(datasets) > 1:
        raise UserError(f"--root names one dataset directory, but the models read "
                        f"{', '.join(sorted(datasets))}: score one dataset's models at a time")
    if args.out:                                 # before minutes of scoring
        check_file(args.out, data_dirs=[("dataset directory", args.root)],
                   inputs=[("released weights", r.path(args.weights_dir)) for r in releases])
    set_device(args.gpu)
    rows = []
    for released in releases:
        print(f"scoring {released.name} ...", file=sys.stderr, flush=True)
        reports = os.path.join(os.path.dirname(os.path.abspath(args.out)), released.model) if args.out else None
        net = NetConfig.of(released.model, root=args.root, width=args.width)
        rows.append(evaluate(released, net, args.weights_dir,
                             scales=args.scales, flip=args.flip, report_dir=reports))
    print("\n".join(format_rows(rows)))
    if tta_note(args.scales, args.flip):
        print(tta_note(args.scales, args.flip)[2:])
    if args.out:
        atomic_write(args.out, json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
