"""Nets for surgery: a destination net built without its dataset (its Python
data layers replaced by Input layers of checked shapes). Reading files,
building nets and loading or saving weights safely is netio's.
"""
import caffe
from caffe.proto import caffe_pb2

from netio.files import read_prototxt
from netio.nets import check_structure, net_from_param

from .errors import SurgeryError

# Tops a Python data layer may produce that hold one channel (labels, depth).
ONE_CHANNEL_TOPS = ("label", "sem", "geo", "depth")
INPUT_SIZE = 64


def default_input_shape(top, size=INPUT_SIZE):
    """1x1xSxS for label/depth tops, 1x3xSxS for images."""
    channels = 1 if top in ONE_CHANNEL_TOPS or "label" in top else 3
    return (1, channels, size, size)


def replace_data_layers(param, shapes=None, size=INPUT_SIZE):
    """A copy of `param` whose Python data layers are Input layers.

    Surgery needs the net's parameters, not its data: an Input layer with the
    same tops lets the net be built without the dataset (or the data layer's
    module). `shapes` maps top name to shape; other tops get default_input_shape.
    """
    shapes = shapes or {}
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    replaced = {}
    for layer in param.layer:
        new = out.layer.add()
        if layer.type != "Python" or layer.bottom:
            new.CopyFrom(layer)
            continue
        new.name, new.type = layer.name, "Input"
        new.top.extend(layer.top)
        new.include.extend(layer.include)
        new.exclude.extend(layer.exclude)
        for top in layer.top:
            replaced[top] = tuple(shapes.get(top) or default_input_shape(top, size))
            new.input_param.shape.add().dim.extend(replaced[top])
    check_input_shapes(replaced, shapes, size)
    return out


def check_input_shapes(replaced, given, size):
    """The data tops' shapes as the net will see them: positive, N x C x H x W,
    one batch size and one H x W for all (as every FCN data layer serves
    them), one channel for label/depth tops. Caffe aborts on each otherwise."""
    if size < 1:
        raise SurgeryError(f"--input-size must be at least 1, got {size}")
    unknown = sorted(set(given) - set(replaced))
    if unknown:
        known = ", ".join(sorted(replaced)) or "none (the net has no Python data layer)"
        raise SurgeryError(f"--input-shape names top(s) {', '.join(unknown)}, which no data "
                           f"layer of the net produces; data tops: {known}")
    for top, dims in replaced.items():
        if len(dims) != 4 or min(dims) < 1:
            raise SurgeryError(f"--input-shape {top}: expected 4 positive dimensions "
                               f"NxCxHxW, got {'x'.join(map(str, dims))}")
        if (top in ONE_CHANNEL_TOPS or "label" in top) and dims[1] != 1:
            raise SurgeryError(f"--input-shape {top}: a {top} top has 1 channel, got {dims[1]}")
    layouts = {(dims[0],) + dims[2:] for dims in replaced.values()}
    if len(layouts) > 1:
        shown = ", ".join(f"{t}={'x'.join(map(str, d))}" for t, d in replaced.items())
        raise SurgeryError(f"--input-shape: the data tops must share N, H and W, got {shown}")


def load_for_surgery(proto, phase=caffe.TRAIN, shapes=None, size=INPUT_SIZE):
    """A destination net built without its dataset (see replace_data_layers)."""
    param = read_prototxt(proto)
    check_structure(param, proto)
    return net_from_param(replace_data_layers(param, shapes, size), phase)


def deploy_param(args):
    """The deploy NetParameter of args.model and the model flags
    (common.cli.add_model_args): a model, a template (on --dataset/--classes,
    resolved as solve and infer resolve them) or an ILSVRC classifier (at its
    fixed input size: its fc layers fix it)."""
    from net_specs import build
    from net_specs.classifiers import CLASSIFIERS, classifier
    from net_specs.resolve import resolve_args
    if args.model in CLASSIFIERS:
        if args.dataset or args.classes:
            raise SurgeryError(f"{args.model} is an ImageNet classifier: --dataset and "
                               "--classes do not apply")
        return classifier(args.model, width=args.width, batch=1)
    return build(resolve_args(args), "deploy", size=(INPUT_SIZE, INPUT_SIZE))
