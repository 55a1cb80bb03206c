"""The inference CLI (`python -m solvers.infer`): segment images with a trained
FCN and save label maps and visualisations.

    python -m solvers.infer MODEL WEIGHTS IMAGE_OR_DIR... [--out DIR]
        [--cpu | --gpu N] [--save-scores] [--keep-going] [--batch N] [--width W]
        [--max-pixels N] [--downscale] [--scales 0.5,0.75,1,1.25,1.5] [--flip]

Outputs and exit statuses: EPILOG below. The library is solvers.inference.predictor.
"""
import argparse
import os
import sys

from common.cli import add_device_args, add_model_args, int_at_least, run_cli, set_device
from common.outputs import check_dir
from net_specs.resolve import resolve_args

from .batch import run
from .predictor import InferError, Predictor
from .stitching import DEFAULT_MAX_PIXELS
from .tta import add_tta_args

DESCRIPTION = "Segment images with a trained FCN and save label maps and visualisations."
EPILOG = """For each image (a directory stands for its .jpg/.jpeg/.png files, sorted;
hidden files, whose names start with a dot such as macOS's ._x.jpg and
.DS_Store, are skipped):

    OUT/<stem>.png          label map, a palette PNG whose pixel values are the
                            class indices (VOC colours for VOC-like data)
    OUT/<stem>_viz.png      image | overlay | legend of the classes present
    OUT/<stem>_scores.npy   with --save-scores: the C x H x W float32 scores
                            (with --scales/--flip: the averaged class probabilities)

Two-head models (SIFT Flow) write each file per head, suffixed _sem / _geo
(`<stem>_sem.png`, `<stem>_geo_viz.png`, ...). Every file is written
atomically. Grey, 16-bit (scaled by the 16-bit range), palette and RGBA
images are converted to RGB (with a
warning); images of equal size share one forward pass (batches of up to
--batch). Images over --max-pixels, or too large for Caffe in one pass, are
segmented in overlapping tiles (solvers/inference/stitching.py), or with --downscale in one
smaller pass. Output names never clash: where one image's outputs would
overwrite another's (x.jpg's x_viz.png and x_viz.jpg's label map), the later
image's stem gets a number (x_viz_2.png). EXIF orientation is ignored: images
are segmented as stored, unrotated. Exit status: 0 all images segmented; 2 a bad flag, model, weights file or
(without --keep-going) image, one line on stderr; 3 finished with
--keep-going but some images failed (listed at the end)."""
EXIT_SOME_FAILED = 3


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m solvers.infer", description=DESCRIPTION,
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name (`python -m net_specs list`) or template")
    parser.add_argument("weights", help="trained .caffemodel, or `published`: the authors' "
                        "released weights (fetched into weights/published/ on first use)")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or directories")
    parser.add_argument("--out", default="predictions", help="output directory (default predictions)")
    add_device_args(parser)
    parser.add_argument("--save-scores", action="store_true", help="also save <stem>_scores.npy")
    parser.add_argument("--keep-going", action="store_true",
                        help="skip bad images (exit status 3 if any failed)")
    parser.add_argument("--batch", type=int_at_least("--batch", 1), default=4, metavar="N",
                        help="at most N equal-size images per forward (default 4)")
    add_model_args(parser, root=False)
    parser.add_argument("--max-pixels", type=int_at_least("--max-pixels", 1),
                        default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="larger images are segmented in overlapping tiles of at most N "
                             f"pixels (default {DEFAULT_MAX_PIXELS}: 500x500; voc-fcn8s at width 1 "
                             "peaks at about 2 GB at 500x375, README 'Memory')")
    parser.add_argument("--downscale", action="store_true",
                        help="segment images over --max-pixels downscaled to fit instead of in tiles")
    add_tta_args(parser)
    return run_cli("solvers.infer", infer_cli, parser.parse_args(argv), quiet_caffe=True)


def check_out_is_not_an_input(inputs, out):
    """--out must not be an input directory, nor hold an input PNG: the
    outputs (<stem>.png, <stem>_viz.png, ...) would overwrite the inputs."""
    target = os.path.realpath(out)
    for path in inputs:
        if os.path.isdir(path) and os.path.realpath(path) == target:
            raise InferError(f"--out {out} is the input directory {path}: the label maps would "
                             "overwrite or mix with its images; choose another --out")
        if (os.path.isfile(path) and path.lower().endswith(".png")
                and os.path.realpath(os.path.dirname(os.path.abspath(path))) == target):
            raise InferError(f"--out {out} holds the input image {path}, which the outputs "
                             "(<stem>.png, <stem>_viz.png) could overwrite; choose another --out")


def infer_cli(args):
    check_dir(args.out, [("weights", args.weights)])
    check_out_is_not_an_input(args.inputs, args.out)
    net = resolve_args(args)
    set_device(args.gpu)
    from surgery.download import weights_argument
    args.weights = weights_argument(args.weights, args.model)
    predictor = Predictor.from_model(net, args.weights, batch_size=args.batch,
                                     max_pixels=args.max_pixels, downscale=args.downscale,
                                     scales=args.scales, flip=args.flip)
    done, failures = run(predictor, args.inputs, args.out, args.save_scores, args.keep_going)
    print(f"segmented {done} image(s) into {args.out}/")
    if failures:
        print(f"solvers.infer: {len(failures)} image(s) failed:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
