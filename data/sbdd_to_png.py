"""Convert SBD's cls/*.mat (or inst/*.mat) label maps to VOC-palette PNGs.

    python -m data.sbdd_to_png DATASET_DIR [--kind cls|inst] [--out DIR]

The data layer reads the .mat files directly; PNGs are for viewing and for
tools that expect VOC's SegmentationClass format. Each PNG is written to a
temporary file and renamed, so an interrupted run leaves no truncated PNG;
a bad .mat is reported with its path and the rest are still converted (exit
status 1 if any failed).
"""
import argparse
import glob
import os
import sys

from common.atomic import atomic_write
from common.cli import run_cli
from common.outputs import check_dir
from common.palette import label_image, png_bytes, voc_palette
from layers.io import read_sbd

STRUCTS = {"cls": "GTcls", "inst": "GTinst"}


def write_png_atomic(path, label):
    image = label_image(label, voc_palette())
    atomic_write(path, png_bytes(image))


def convert(dataset_dir, kind="cls", out=None, log=None):
    """Convert every <kind>/*.mat; returns (converted count, [error messages])."""
    log = log or sys.stderr
    src = os.path.join(dataset_dir, kind)
    out = out or src
    os.makedirs(out, exist_ok=True)
    paths = sorted(glob.glob(os.path.join(src, "*.mat")))
    if not paths:
        return 0, [f"{src}: no .mat files"]
    done, errors = 0, []
    for n, path in enumerate(paths):
        try:
            label = read_sbd(path, STRUCTS[kind])
            if label.size and (label.min() < 0 or label.max() > 255):
                raise ValueError(f"{path}: values outside 0..255 do not fit a palette PNG")
            write_png_atomic(os.path.join(out, os.path.basename(path)[:-4] + ".png"), label)
            done += 1
        except (OSError, ValueError) as e:
            errors.append(str(e))
            print(f"error: {e}", file=log)
        if (n + 1) % 1000 == 0:
            print(f"{n + 1} / {len(paths)}", file=log)
    return done, errors


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data.sbdd_to_png", description=__doc__.split("\n")[0])
    parser.add_argument("dataset_dir", help="SBD's benchmark_RELEASE/dataset")
    parser.add_argument("--kind", choices=sorted(STRUCTS), default="cls")
    parser.add_argument("--out", help="output directory (default: next to the .mat files)")
    args = parser.parse_args(argv)
    return run_cli("data.sbdd_to_png", _convert_all, args)


def _convert_all(args):
    out = args.out or os.path.join(args.dataset_dir, args.kind)
    check_dir(out)
    done, errors = convert(args.dataset_dir, args.kind, args.out)
    print(f"converted {done}, failed {len(errors)}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
