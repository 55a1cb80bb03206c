"""The one way to build a caffe.Net and load weights into it, and to save
them: every case Caffe treats as fatal (an unknown layer type, a dangling
bottom, a layer setting it CHECKs, a caffemodel that does not fit) is found
first and raised as NetIOError naming the file.

A caffemodel is parsed once per use (`Caffemodel`): the checks, the missing
layers and a transplant's arrays all come from that one parse; the copy
itself is Caffe's `net.copy_from` (C++ reads the file far faster than
protobuf's Python objects turn into arrays: ~17 s for VGG16's 138M values).
"""
import os
import sys
import tempfile

import caffe
import numpy as np
from google.protobuf import text_format

from common.atomic import atomic_path

from .errors import NetIOError, WeightsError
from .files import (blob_count, blob_proto_shape, blob_values, is_legacy, read_caffemodel,
                    read_prototxt, weight_layers)


class Caffemodel:
    """A caffemodel parsed once: its path, its NetParameter, the names of the
    layers that hold parameters, and (`params`) its blobs as arrays by layer
    name, shaped like `caffe.Net.params` -- so that any caffemodel (an ILSVRC
    classifier, an earlier FCN stage, a surgery output) can be a transplant
    source with no prototxt for it."""

    def __init__(self, path):
        self.path = path
        self.param = read_caffemodel(path)
        self.stored = {layer.name for layer in weight_layers(self.param) if layer.blobs}
        self._params = None

    @classmethod
    def of(cls, weights):
        """`weights` as a Caffemodel: one already parsed, or a path to parse."""
        return weights if isinstance(weights, cls) else cls(weights)

    def missing_for(self, net):
        """The net's parameter layers this file holds no parameters for, in net order."""
        return [name for name in param_layers(net) if name not in self.stored]

    @property
    def params(self):
        if self._params is None:
            self._params = {layer.name: [_Blob(a) for a in _arrays(layer, self.path)]
                            for layer in weight_layers(self.param) if layer.blobs}
        return self._params


class _Blob:
    """The `.data` of one stored blob, as caffe.Net.params entries have."""
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


def _arrays(layer, path):
    """A stored layer's blobs as arrays, legacy shapes undone as Caffe does."""
    arrays = []
    for j, blob in enumerate(layer.blobs):
        shape = blob_proto_shape(blob)
        values = blob_values(blob)
        if values.size != int(np.prod(shape)):
            raise NetIOError(f"{path}: layer {layer.name!r} blob {j} holds {values.size} "
                             f"values for shape {shape}")
        if is_legacy(blob) and j > 0 and shape[:3] == (1, 1, 1):
            shape = shape[3:]          # legacy 1x1x1xN biases
        elif is_legacy(blob) and shape[:2] == (1, 1) and layer.type in (
                "InnerProduct", caffe.proto.caffe_pb2.V1LayerParameter.INNER_PRODUCT):
            shape = shape[2:]          # legacy 1x1xOxI fully connected weights
        arrays.append(values.reshape(shape))
    return arrays


def param_layers(net):
    """Names of the net's layers that have parameters, in order."""
    return [name for name, layer in zip(net._layer_names, net.layers) if len(layer.blobs)]


# ------------------------------------------------------------------ structure

def check_structure(param, path):
    """Unknown layer types, dangling bottoms and the layer settings Caffe
    CHECKs at setup (num_output, kernel, stride): all fatal inside Caffe."""
    known = set(caffe.layer_type_list())
    produced = set(param.input)
    for layer in param.layer:
        if layer.type not in known:
            raise NetIOError(f"{path}: layer {layer.name!r} has type {layer.type!r}, "
                             f"which this Caffe build does not register")
        problem = _setting_problem(layer)
        if problem:
            raise NetIOError(f"{path}: layer {layer.name!r} ({layer.type}): {problem}")
        missing = [b for b in layer.bottom if b not in produced]
        if missing:
            raise NetIOError(f"{path}: layer {layer.name!r} reads {missing}, "
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


# ------------------------------------------------------------------ building

def net_from_param(param, phase=caffe.TEST, weights=None, **load):
    """A caffe.Net of a NetParameter (Caffe only builds nets from files: it
    goes through a temporary prototxt), its structure checked first;
    `weights` (a path or Caffemodel) loaded by `load_weights(**load)`."""
    check_structure(param, f"net {param.name!r}")
    with tempfile.TemporaryDirectory(prefix="netio-") as tmp:
        path = os.path.join(tmp, "net.prototxt")
        with open(path, "w") as f:
            f.write(text_format.MessageToString(param))
        net = caffe.Net(path, phase)
    if weights is not None:
        load_weights(net, weights, **load)
    return net


def load_net(proto, weights=None, phase=caffe.TEST, complete=False):
    """caffe.Net(proto[, weights]) with every fatal case turned into NetIOError.

    `complete`: every parameter layer of the net must be in `weights` (a
    source classifier; a file cut between two layers parses, and would leave
    the missing layers at zero)."""
    check_structure(read_prototxt(proto), proto)
    net = caffe.Net(proto, phase)
    if weights is not None:
        load_weights(net, weights, complete=complete, warn=False)
    return net


# ------------------------------------------------------------------ weights

def check_fit(net, caffemodel):
    """Everything CopyTrainedLayersFrom would CHECK-fail on, as one WeightsError."""
    problem = _fit_problem(net, caffemodel.param)
    if problem:
        raise WeightsError(f"{caffemodel.path}: {problem} (weights of another model or width?)")


def _fit_problem(net, param):
    targets = {name: [b.data.shape for b in layer.blobs]
               for name, layer in zip(net._layer_names, net.layers)}
    for layer in weight_layers(param):
        if layer.name not in targets:
            continue  # Caffe ignores weights of layers the net lacks
        shapes = targets[layer.name]
        if len(shapes) != len(layer.blobs):
            return f"layer {layer.name!r} has {len(layer.blobs)} blobs but the net's layer has {len(shapes)}"
        for j, (shape, blob) in enumerate(zip(shapes, layer.blobs)):
            if not _fits(shape, blob):
                return (f"layer {layer.name!r} blob {j} has shape {blob_proto_shape(blob)} "
                        f"but the net expects {shape}")
            n = blob_count(blob)
            if n != int(np.prod(shape)):
                return (f"layer {layer.name!r} blob {j} holds {n} values, "
                        f"expected {int(np.prod(shape))} for shape {shape}")
    return None


def _fits(target_shape, blob):
    """Caffe's Blob::ShapeEquals: legacy 4-d shapes compare padded on the left."""
    if is_legacy(blob):
        padded = (1,) * (4 - len(target_shape)) + target_shape
        return len(target_shape) <= 4 and padded == blob_proto_shape(blob)
    return target_shape == tuple(blob.shape.dim)


def load_weights(net, weights, complete=False, warn=True):
    """Load a caffemodel (a path, or a Caffemodel already parsed) into `net`
    after checking it cannot make Caffe abort; returns the net's parameter
    layers the file does not cover (they keep their initial values, with a
    warning when `warn`). `complete`: every one must be covered (a source
    classifier, an export); else at least one must."""
    caffemodel = Caffemodel.of(weights)
    path = caffemodel.path
    check_fit(net, caffemodel)
    missing = caffemodel.missing_for(net)
    if complete and missing:
        raise WeightsError(f"caffemodel {path} has no parameters for layer(s) "
                           f"{', '.join(missing)} of the net: truncated (cut between layers) "
                           f"or the weights of another model")
    if not complete and not set(param_layers(net)) & caffemodel.stored:
        raise WeightsError(f"{path}: no layer of the weights file matches the net "
                           "(weights of another model?)")
    if missing and warn:
        print(f"warning: {path} has no parameters for layer(s) {', '.join(missing)}; "
              "they keep their initial values", file=sys.stderr)
    net.copy_from(path)
    return missing


def save_weights(net, path):
    """net.save through a temporary name and os.replace: never a half-written file."""
    with atomic_path(path) as tmp:
        net.save(tmp)
