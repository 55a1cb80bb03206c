"""Command line: `python -m surgery convert | download | published | export-onnx ...`.

convert: ImageNet classifier (deploy prototxt + caffemodel) -> FCN initial
weights: transplant by name (fc layers convolutionalised), bilinear upscore*
deconvolutions, written atomically, with the transplant table printed.
download: ImageNet classifiers and the released FCNs (`published` lists them).
export-onnx: a model's deploy net and weights as an ONNX file (surgery.onnx_export).
reinit-score: fine-tuning a trained FCN to a new class count: every layer kept
except the score layers (zero, as the reference starts them) and the upscore
deconvolutions (bilinear), which are rebuilt for --classes (surgery.reinit).
"""
import argparse
import os
import sys

from common.caffe_log import quiet_caffe

quiet_caffe()  # before Caffe is first imported

import caffe  # noqa: E402

from common.cli import add_model_args, run_cli  # noqa: E402
from common.outputs import check_file  # noqa: E402

from .download import download as fetch_model, download_names  # noqa: E402
from .errors import SurgeryError  # noqa: E402
from netio.nets import load_net, load_weights, save_weights  # noqa: E402

from .io import load_for_surgery  # noqa: E402
from .published import markdown_table, table  # noqa: E402
from .recipe import initialise  # noqa: E402
from .transplant import COERCED, COPIED  # noqa: E402


def parse_shape(text):
    """TOP=1x3x64x64 -> ("TOP", (1, 3, 64, 64))."""
    try:
        top, dims = text.split("=")
        return top, tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TOP=NxCxHxW, got {text!r}") from None


def check_out(args, inputs):
    """--out is checked before any work (common.outputs): a file, writable,
    not one of `inputs` (attribute names of args)."""
    check_file(args.out, [("--" + name.replace("_", "-"), getattr(args, name)) for name in inputs])


def check_transplanted(report, args):
    """Refuse to write a net that received nothing (e.g. a --suffix typo)."""
    if any(r.status in (COPIED, COERCED) for r in report):
        return
    if args.suffix:
        raise SurgeryError(f"--suffix {args.suffix!r}: no layer <name>{args.suffix} of "
                           f"{args.dst_proto} matches a layer of {args.src_weights}; "
                           "nothing was transplanted (misspelt suffix?)")
    raise SurgeryError(f"no layer of {args.dst_proto} matches a layer of {args.src_weights} "
                       "by name; nothing was transplanted")


def convert(args):
    check_out(args, ("src_proto", "src_weights", "dst_proto", "dst_weights"))
    src = load_net(args.src_proto, args.src_weights, caffe.TEST, complete=True)
    dst = load_for_surgery(args.dst_proto, caffe.TRAIN, dict(args.input_shape), args.input_size)
    if args.dst_weights:
        load_weights(dst, args.dst_weights, warn=False)
    check_transplanted(initialise(src, dst, args.suffix), args)
    save_weights(dst, args.out)
    print(f"wrote {args.out}")


def download(args):
    print(fetch_model(args.model, args.dir))


def export_onnx(args):
    from .download import weights_argument
    from .io import deploy_param
    from .onnx_export import export
    check_out(args, ("weights",))
    weights = weights_argument(args.weights, args.model)
    out, n_nodes = export(deploy_param(args), weights, args.out, args.model)
    print(f"wrote {out} ({n_nodes} ONNX nodes)")


def reinit_score(args):
    from netio.nets import Caffemodel, net_from_param
    from .io import deploy_param
    from .reinit import reinit_score as reinit
    check_out(args, ("weights",))
    src = Caffemodel(args.weights)
    dst = net_from_param(deploy_param(args))
    reinit(src, dst)
    save_weights(dst, args.out)
    print(f"wrote {args.out}")


def published(args):
    print(markdown_table() if args.markdown else "\n".join(table()))


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m surgery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="classifier caffemodel -> FCN initialisation")
    c.add_argument("--src-proto", required=True, help="source deploy prototxt")
    c.add_argument("--src-weights", required=True, help="source caffemodel")
    c.add_argument("--dst-proto", required=True, help="FCN prototxt (train/val/deploy)")
    c.add_argument("--out", required=True, help="caffemodel to write")
    c.add_argument("--suffix", default="", help="target layer-name suffix, e.g. hha (late fusion: conv1_1hha)")
    c.add_argument("--dst-weights", help="start from these weights (e.g. the other stream)")
    c.add_argument("--input-size", type=int, default=64,
                   help="side of the Input that replaces Python data layers (default 64)")
    c.add_argument("--input-shape", type=parse_shape, action="append", default=[],
                   metavar="TOP=NxCxHxW", help="shape of one replaced data top (repeatable)")
    c.set_defaults(run=convert)

    d = sub.add_parser("download", help="fetch a public ImageNet caffemodel or a released FCN "
                       "(`published` lists them)")
    d.add_argument("model", choices=download_names())
    d.add_argument("--dir", help="directory to write into (default weights/, released FCNs "
                   "weights/published/)")
    d.set_defaults(run=download)

    p = sub.add_parser("published", help="list the released FCN caffemodels, their URLs, "
                       "size, checksum status and the paper's score")
    p.add_argument("--markdown", action="store_true", help="as docs/released-models.md's Markdown table")
    p.set_defaults(run=published)

    e = sub.add_parser("export-onnx", help="an FCN (model name + caffemodel) as an ONNX file")
    e.add_argument("model", help="model, template or classifier name (`python -m net_specs list`)")
    e.add_argument("weights", help="its .caffemodel, or `published`: the released weights")
    e.add_argument("--out", required=True, help="the .onnx file to write (atomically)")
    add_model_args(e, dataset=True, root=False, class_names=False)
    e.set_defaults(run=export_onnx)

    r = sub.add_parser("reinit-score", help="fine-tuning to another class count: keep a trained "
                       "FCN's weights, re-initialise its score and upscore layers for --classes")
    r.add_argument("model", help="the model or template to fine-tune (e.g. fcn8s with --dataset "
                   "folder --classes 5)")
    r.add_argument("weights", help="the trained .caffemodel (e.g. a released voc-fcn8s)")
    r.add_argument("--out", required=True, help="the initial .caffemodel to write, for "
                   "`solvers.solve ... --weights OUT`")
    add_model_args(r, dataset=True, root=False, class_names=False)
    r.set_defaults(run=reinit_score)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("surgery", lambda a: a.run(a), args)


if __name__ == "__main__":
    sys.exit(main())
