"""Load and save nets so that bad files raise SurgeryError instead of aborting.

Caffe treats an unreadable prototxt or caffemodel, a weight blob of the wrong
shape and an unknown layer type as fatal (glog CHECK: the whole process dies
with no Python exception). Those cases (missing, unparsable or ill-fitting
files, unknown layer types, dangling bottoms) are checked first in Python,
with the protobuf classes Caffe itself uses.
"""
import os
import tempfile

import caffe
import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from common.atomic import atomic_path
from common.outputs import check_free_space

from .errors import SurgeryError

# Tops a Python data layer may produce that hold one channel (labels, depth).
ONE_CHANNEL_TOPS = ("label", "sem", "geo", "depth")
INPUT_SIZE = 64


def read_prototxt(path):
    """Parse a text NetParameter, naming the file on any failure."""
    if not os.path.isfile(path):
        raise SurgeryError(f"prototxt not found: {path}")
    param = caffe_pb2.NetParameter()
    try:
        with open(path) as f:
            text_format.Merge(f.read(), param)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise SurgeryError(f"cannot parse prototxt {path}: {e}") from None
    return param


def read_weights(path):
    """Parse a binary caffemodel; missing, empty, truncated or corrupt files raise."""
    if not os.path.isfile(path):
        raise SurgeryError(f"caffemodel not found: {path}")
    if path.endswith(".h5"):
        raise SurgeryError(f"{path}: HDF5 weights are not supported, use a binary .caffemodel")
    with open(path, "rb") as f:
        data = f.read()
    not_weights = what_else(path, data)
    if not_weights:
        raise SurgeryError(f"{path} is {not_weights}, not a caffemodel of trained weights")
    param = caffe_pb2.NetParameter()
    try:
        param.ParseFromString(data)
    except Exception as e:  # DecodeError; upb raises its own subclasses
        raise SurgeryError(f"caffemodel {path} is truncated or corrupt "
                           f"({len(data)} bytes; protobuf: {e})") from None
    if not any(layer.blobs for layer in weight_layers(param)):
        raise SurgeryError(f"caffemodel {path} ({len(data)} bytes) holds no learned "
                           f"parameters: empty, truncated or not a caffemodel")
    return param


def what_else(path, data):
    """What a file given as weights is instead, for the two usual mix-ups:
    a solver state (.solverstate) and a text prototxt; None otherwise."""
    state = caffe_pb2.SolverState()
    if path.endswith(".solverstate") or data[:1] == b"\x08":    # SolverState starts with iter
        try:
            state.ParseFromString(data)
        except Exception:
            state = None
        if state is not None and state.learned_net:
            return (f"a solver state (iteration {state.iter}; --resume takes it) whose weights "
                    f"are in {state.learned_net}")
        if path.endswith(".solverstate"):
            return "a solver state (--resume takes it; the weights are the .caffemodel beside it)"
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return None
    words = ("layer", "name:", "input:", "base_lr", "net:", "type:")
    if text.strip() and any(w in text for w in words):
        kind = "a solver prototxt" if "base_lr" in text or "net:" in text else "a prototxt"
        return f"{kind} (text)"
    return None


def weight_layers(param):
    """Layers of a NetParameter in either format (V1 `layers` as in VGG16's file)."""
    return list(param.layer) + list(param.layers)


class _Blob:
    """The `.data` of one stored blob, as caffe.Net.params entries have."""
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class WeightsFile:
    """A caffemodel's parameters by layer name, shaped like `caffe.Net.params`.

    Lets `transplant` copy from any caffemodel (an ILSVRC classifier, an
    earlier FCN stage, a surgery output) with no prototxt for it.
    """

    def __init__(self, path):
        self.path = path
        self.params = {}
        for layer in weight_layers(read_weights(path)):
            if not layer.blobs:
                continue
            blobs = []
            for j, blob in enumerate(layer.blobs):
                shape = blob_proto_shape(blob)
                values = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
                if values.size != int(np.prod(shape)):
                    raise SurgeryError(f"{path}: layer {layer.name!r} blob {j} holds {values.size} "
                                       f"values for shape {shape}")
                if _is_legacy(blob) and j > 0 and shape[:3] == (1, 1, 1):
                    shape = shape[3:]          # legacy 1x1x1xN biases
                elif _is_legacy(blob) and shape[:2] == (1, 1) and layer.type in (
                        "InnerProduct", caffe_pb2.V1LayerParameter.INNER_PRODUCT):
                    shape = shape[2:]          # legacy 1x1xOxI fully connected weights
                blobs.append(_Blob(values.reshape(shape)))
            self.params[layer.name] = blobs


def check_structure(param, path):
    """Unknown layer types, dangling bottoms and the layer settings Caffe
    CHECKs at setup (num_output, kernel, stride): all fatal inside Caffe."""
    known = set(caffe.layer_type_list())
    produced = set(param.input)
    for layer in param.layer:
        if layer.type not in known:
            raise SurgeryError(f"{path}: layer {layer.name!r} has type {layer.type!r}, "
                               f"which this Caffe build does not register")
        problem = _setting_problem(layer)
        if problem:
            raise SurgeryError(f"{path}: layer {layer.name!r} ({layer.type}): {problem}")
        missing = [b for b in layer.bottom if b not in produced]
        if missing:
            raise SurgeryError(f"{path}: layer {layer.name!r} reads {missing}, "
                               f"which no earlier layer produces")
        produced.update(layer.top)


def _setting_problem(layer):
    """What Caffe's setup of this layer would CHECK-fail on, or None."""
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = list(p.kernel_size) or [v for v in (p.kernel_h, p.kernel_w) if p.HasField("kernel_h")]
        strides = list(p.stride) + [v for f, v in (("stride_h", p.stride_h), ("stride_w", p.stride_w))
                                    if p.HasField(f)]
        if p.num_output < 1:
            return f"num_output must be at least 1, got {p.num_output}"
        if not kernel or min(kernel) < 1:
            return f"kernel_size must be given and at least 1, got {kernel or 'none'}"
        if strides and min(strides) < 1:
            return f"stride must be at least 1, got {strides}"
        if p.group < 1 or p.num_output % p.group:
            return f"num_output {p.num_output} must be a multiple of group {p.group}"
    elif layer.type == "InnerProduct" and layer.inner_product_param.num_output < 1:
        return f"num_output must be at least 1, got {layer.inner_product_param.num_output}"
    elif layer.type == "Pooling" and not layer.pooling_param.global_pooling:
        p = layer.pooling_param
        kernel = [p.kernel_size] if p.HasField("kernel_size") else \
            [p.kernel_h, p.kernel_w] if p.HasField("kernel_h") else []
        if not kernel or min(kernel) < 1:
            return f"kernel_size must be given and at least 1, got {kernel or 'none'}"
        if (p.stride_h if p.HasField("stride_h") else p.stride) < 1 or \
                (p.HasField("stride_w") and p.stride_w < 1):
            return "stride must be at least 1"
    return None


def _is_legacy(blob):
    return any(blob.HasField(f) for f in ("num", "channels", "height", "width"))


def blob_proto_shape(blob):
    """A BlobProto's shape; legacy (num, channels, height, width) when set."""
    if _is_legacy(blob):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def _fits(target_shape, blob):
    """Caffe's Blob::ShapeEquals: legacy 4-d shapes compare padded on the left."""
    if _is_legacy(blob):
        padded = (1,) * (4 - len(target_shape)) + target_shape
        return len(target_shape) <= 4 and padded == blob_proto_shape(blob)
    return target_shape == tuple(blob.shape.dim)


def check_weights_fit(net, param, path):
    """Everything CopyTrainedLayersFrom would CHECK-fail on, as one clear error."""
    targets = {name: [b.data.shape for b in layer.blobs]
               for name, layer in zip(net._layer_names, net.layers)}
    for layer in weight_layers(param):
        if layer.name not in targets:
            continue  # Caffe ignores weights of layers the net lacks
        shapes = targets[layer.name]
        if len(shapes) != len(layer.blobs):
            raise SurgeryError(f"{path}: layer {layer.name!r} has {len(layer.blobs)} blobs "
                               f"but the net's layer has {len(shapes)}")
        for j, (shape, blob) in enumerate(zip(shapes, layer.blobs)):
            if not _fits(shape, blob):
                raise SurgeryError(f"{path}: layer {layer.name!r} blob {j} has shape "
                                   f"{blob_proto_shape(blob)} but the net expects {shape}")
            n = len(blob.data) or len(blob.double_data)
            if n != int(np.prod(shape)):
                raise SurgeryError(f"{path}: layer {layer.name!r} blob {j} holds {n} values, "
                                   f"expected {int(np.prod(shape))} for shape {shape}")


def load_net(proto, weights=None, phase=caffe.TEST, complete=False):
    """caffe.Net(proto[, weights]) with every fatal case turned into SurgeryError.

    `complete`: every parameter layer of the net must be in `weights` (a
    source classifier; a file cut between two layers parses, and would leave
    the missing layers at zero)."""
    check_structure(read_prototxt(proto), proto)
    net = caffe.Net(proto, phase)
    if weights is not None:
        copy_weights(net, weights, complete)
    return net


def copy_weights(net, path, complete=False):
    """net.copy_from(path) after checking the file parses and fits the net
    (and, with `complete`, covers every parameter layer of the net)."""
    param = read_weights(path)
    check_weights_fit(net, param, path)
    if complete:
        check_weights_complete(net, param, path)
    net.copy_from(path)


def check_weights_complete(net, param, path):
    """Every layer of `net` that has parameters has them in the caffemodel."""
    stored = {layer.name for layer in weight_layers(param) if layer.blobs}
    missing = [name for name, layer in zip(net._layer_names, net.layers)
               if len(layer.blobs) and name not in stored]
    if missing:
        raise SurgeryError(f"caffemodel {path} has no parameters for layer(s) "
                           f"{', '.join(missing)} of the net: truncated (cut between layers) "
                           f"or the weights of another model")


def net_from_param(param, phase=caffe.TEST):
    """Instantiate a NetParameter (Caffe only builds nets from files)."""
    check_structure(param, f"net {param.name!r}")
    fd, path = tempfile.mkstemp(suffix=".prototxt")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text_format.MessageToString(param))
        return caffe.Net(path, phase)
    finally:
        os.unlink(path)


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


def deploy_param(model_name, width=1.0, dataset=None, classes=None, mean=None):
    """The deploy NetParameter of a model, template (on --dataset/--classes,
    resolved as solve and infer resolve them) or ILSVRC classifier (at its
    fixed input size: its fc layers fix it)."""
    from net_specs import build
    from net_specs.classifiers import CLASSIFIERS, classifier
    from net_specs.resolve import resolve
    if model_name in CLASSIFIERS:
        if dataset or classes:
            raise SurgeryError(f"{model_name} is an ImageNet classifier: --dataset and "
                               "--classes do not apply")
        return classifier(model_name, width=width, batch=1)
    model, data = resolve(model_name, dataset, classes, mean)
    return build(model, "deploy", dataset=data, width=width, size=(INPUT_SIZE, INPUT_SIZE))


def save_weights(net, path):
    """net.save through a temporary name and os.replace: never a half-written
    file. Caffe aborts the process when its write fails, so the free space is
    checked first (OutputError, the previous file untouched)."""
    check_free_space(path, caffemodel_bytes(net))
    with atomic_path(path) as tmp:
        net.save(tmp)


def caffemodel_bytes(net):
    """About what net.save writes: every learned blob as float32, plus the
    layer definitions (small beside the weights)."""
    blobs = sum(b.data.nbytes for params in net.params.values() for b in params)
    return blobs + 512 * len(net.layers)
