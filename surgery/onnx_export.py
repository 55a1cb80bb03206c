"""An FCN's Caffe NetParameter and weights as an ONNX graph, layer by layer.

The graph takes what the Caffe deploy net takes (mean-subtracted BGR, and
for NYUD the same named inputs) with dynamic batch, height and width, and
returns the same score tops. Each Caffe layer maps to ONNX operators that
compute exactly what Caffe computes in the TEST phase:

- Convolution / Deconvolution -> Conv / ConvTranspose (groups, dilation; the
  output-size formulas agree with Caffe's for the same pads and strides);
- Crop -> Slice whose ends come from the reference blob's runtime Shape
  (Caffe's offsets), so any input size works;
- Pooling MAX -> MaxPool with ceil_mode (Caffe rounds pooled sizes up); the
  one case where Caffe then drops a last window starting in the padding
  (pad > 0 and stride > 1) is refused rather than exported approximately;
- Eltwise SUM (with coefficients) / PROD / MAX, ReLU (leaky), Dropout
  (identity at test time), LRN across channels, Concat, InnerProduct
  (Flatten + Gemm), Scale (a per-channel multiplier, optional bias).

Anything else is refused with an error naming the layer: no silent gaps.
"""
import os

import numpy as np

from common.atomic import atomic_path
from netio.geometry import spatial

from .errors import SurgeryError

OPSET = 17
DYNAMIC = ("batch", "height", "width")


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise SurgeryError("ONNX export needs the `onnx` package (an optional extra: "
                           "`make install`, or pip install -r requirements-bench.txt)") from None
    return onnx, helper, numpy_helper


class _Graph:
    """ONNX nodes and initializers, with Caffe's in-place tops renamed apart."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self.current = {}             # Caffe blob name -> ONNX value holding it now
        self.used = set()

    def fresh(self, name):
        candidate, k = name, 1
        while candidate in self.used:
            candidate, k = f"{name}_{k}", k + 1
        self.used.add(candidate)
        return candidate

    def const(self, name, array):
        value = self.fresh(name)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), value))
        return value

    def node(self, op, inputs, name, **attrs):
        out = self.fresh(name)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def bottoms(self, layer):
        missing = [b for b in layer.bottom if b not in self.current]
        if missing:
            raise SurgeryError(f"layer {layer.name!r} reads {missing}, which no earlier layer produces")
        return [self.current[b] for b in layer.bottom]


def _params(net, layer):
    return [np.asarray(b.data, np.float32) for b in net.params[layer.name]] \
        if layer.name in net.params else []


def _convolution(g, layer, x, blobs, transposed):
    p = layer.convolution_param
    attrs = dict(kernel_shape=spatial(p, "kernel_size", 1), strides=spatial(p, "stride", 1),
                 dilations=spatial(p, "dilation", 1), group=p.group)
    pad = spatial(p, "pad", 0)
    attrs["pads"] = pad + pad
    inputs = [x, g.const(layer.name + "_W", blobs[0])]
    if p.bias_term:
        inputs.append(g.const(layer.name + "_b", blobs[1]))
    return g.node("ConvTranspose" if transposed else "Conv", inputs, layer.name, **attrs)


def _crop(g, layer, data, reference):
    p = layer.crop_param
    axis = p.axis if p.axis >= 0 else 4 + p.axis
    axes = list(range(axis, 4))
    offsets = list(p.offset) or [0]
    offsets = offsets * len(axes) if len(offsets) == 1 else offsets
    if len(offsets) != len(axes):
        raise SurgeryError(f"Crop {layer.name!r}: {len(offsets)} offsets for {len(axes)} axes")
    shape = g.node("Shape", [reference], layer.name + "_refshape", start=axis)
    starts = g.const(layer.name + "_starts", np.array(offsets, np.int64))
    ends = g.node("Add", [shape, starts], layer.name + "_ends")
    return g.node("Slice", [data, starts, ends, g.const(layer.name + "_axes", np.array(axes, np.int64))],
                  layer.name)


def _pooling(g, layer, x, caffe_pb2):
    p = layer.pooling_param
    if p.global_pooling or p.pool != caffe_pb2.PoolingParameter.MAX:
        raise SurgeryError(f"Pooling {layer.name!r}: only MAX pooling over a window is exported "
                           "(no FCN here uses average or global pooling)")
    kernel, stride, pad = (spatial(p, "kernel_size", 0), spatial(p, "stride", 1),
                           spatial(p, "pad", 0))
    if any(pd > 0 and s > 1 for pd, s in zip(pad, stride)):
        raise SurgeryError(f"Pooling {layer.name!r}: pad {pad} with stride {stride} rounds "
                           "differently in Caffe and ONNX; not exported")
    return g.node("MaxPool", [x], layer.name, kernel_shape=kernel, strides=stride,
                  pads=pad + pad, ceil_mode=1)


def _eltwise(g, layer, xs, caffe_pb2):
    p = layer.eltwise_param
    E = caffe_pb2.EltwiseParameter
    if p.operation == E.SUM:
        coeffs = list(p.coeff) or [1.0] * len(xs)
        if len(coeffs) != len(xs):
            raise SurgeryError(f"Eltwise {layer.name!r}: {len(coeffs)} coefficients for {len(xs)} bottoms")
        terms = [x if c == 1 else g.node("Mul", [x, g.const(f"{layer.name}_coeff{i}",
                                                             np.array(c, np.float32))],
                                         f"{layer.name}_term{i}")
                 for i, (x, c) in enumerate(zip(xs, coeffs))]
        return g.node("Sum", terms, layer.name)
    if p.operation == E.MAX:
        return g.node("Max", xs, layer.name)
    out = xs[0]                                      # PROD: ONNX Mul is binary
    for i, x in enumerate(xs[1:], 1):
        out = g.node("Mul", [out, x], layer.name if i == len(xs) - 1 else f"{layer.name}_{i}")
    return out


def _scale(g, layer, x, blobs):
    p = layer.scale_param
    if len(layer.bottom) != 1 or p.axis != 1:
        raise SurgeryError(f"Scale {layer.name!r}: only a learned per-channel scale (axis 1, "
                           "one bottom) is exported")
    trailing = (1,) * (3 - blobs[0].ndim)
    out = g.node("Mul", [x, g.const(layer.name + "_scale", blobs[0].reshape(blobs[0].shape + trailing))],
                 layer.name + ("_mul" if p.bias_term else ""))
    if p.bias_term:
        out = g.node("Add", [out, g.const(layer.name + "_bias", blobs[1].reshape(blobs[1].shape + trailing))],
                     layer.name)
    return out


def _inner_product(g, layer, x, blobs):
    p = layer.inner_product_param
    if p.transpose:
        raise SurgeryError(f"InnerProduct {layer.name!r}: transpose is not exported")
    flat = g.node("Flatten", [x], layer.name + "_flat", axis=p.axis)
    inputs = [flat, g.const(layer.name + "_W", blobs[0].reshape(blobs[0].shape[0], -1))]
    if p.bias_term:
        inputs.append(g.const(layer.name + "_b", blobs[1]))
    return g.node("Gemm", inputs, layer.name, transB=1)


def _lrn(g, layer, x, caffe_pb2):
    p = layer.lrn_param
    if p.norm_region != caffe_pb2.LRNParameter.ACROSS_CHANNELS:
        raise SurgeryError(f"LRN {layer.name!r}: only ACROSS_CHANNELS normalisation is exported")
    return g.node("LRN", [x], layer.name, size=p.local_size, alpha=p.alpha, beta=p.beta, bias=p.k)


def to_onnx(param, net, name="fcn"):
    """The ONNX ModelProto of a deploy NetParameter whose weights are in the
    loaded caffe.Net `net` (the same prototxt)."""
    from caffe.proto import caffe_pb2
    onnx, helper, numpy_helper = _onnx()
    g = _Graph(helper, numpy_helper)
    inputs = []
    for layer in param.layer:
        if any(rule.phase == caffe_pb2.TRAIN for rule in layer.include):
            continue
        blobs = _params(net, layer)
        kind = layer.type
        if kind == "Input":
            for top, shape in zip(layer.top, layer.input_param.shape):
                channels = shape.dim[1]
                inputs.append(helper.make_tensor_value_info(
                    top, onnx.TensorProto.FLOAT, [DYNAMIC[0], channels, DYNAMIC[1], DYNAMIC[2]]))
                g.used.add(top)
                g.current[top] = top
            continue
        xs = g.bottoms(layer)
        if kind in ("Convolution", "Deconvolution"):
            out = _convolution(g, layer, xs[0], blobs, kind == "Deconvolution")
        elif kind == "Crop":
            out = _crop(g, layer, xs[0], xs[1])
        elif kind == "Pooling":
            out = _pooling(g, layer, xs[0], caffe_pb2)
        elif kind == "ReLU":
            slope = layer.relu_param.negative_slope
            out = g.node("LeakyRelu", xs, layer.name, alpha=slope) if slope else \
                g.node("Relu", xs, layer.name)
        elif kind == "Dropout":
            out = g.node("Identity", xs, layer.name)   # Caffe scales at train time only
        elif kind == "Eltwise":
            out = _eltwise(g, layer, xs, caffe_pb2)
        elif kind == "Concat":
            p = layer.concat_param
            out = g.node("Concat", xs, layer.name,
                         axis=p.axis if not p.HasField("concat_dim") else p.concat_dim)
        elif kind == "LRN":
            out = _lrn(g, layer, xs[0], caffe_pb2)
        elif kind == "Scale":
            out = _scale(g, layer, xs[0], blobs)
        elif kind == "InnerProduct":
            out = _inner_product(g, layer, xs[0], blobs)
        elif kind == "Softmax":                        # the ILSVRC classifiers' `prob`
            out = g.node("Softmax", xs, layer.name, axis=layer.softmax_param.axis)
        else:
            raise SurgeryError(f"layer {layer.name!r} of type {kind} has no ONNX export")
        if len(layer.top) != 1:
            raise SurgeryError(f"layer {layer.name!r} has {len(layer.top)} tops; one expected")
        g.current[layer.top[0]] = out
    outputs = []
    for top in net.outputs:
        value = g.current[top]
        if value != top:
            if top in g.used:
                raise SurgeryError(f"output {top!r} is also an intermediate name")
            g.used.add(top)
            g.nodes.append(helper.make_node("Identity", [value], [top], name=top + "_output"))
        shape = net.blobs[top].data.shape
        dims = [DYNAMIC[0], *shape[1:2], f"{top}_height", f"{top}_width"] if len(shape) == 4 \
            else [DYNAMIC[0], *shape[1:]]
        outputs.append(helper.make_tensor_value_info(top, onnx.TensorProto.FLOAT, dims))
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="fcn-caffe surgery.onnx_export")
    model.ir_version = min(model.ir_version, 8)     # readable by onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def load_deploy(param, weights):
    """The caffe.Net of a deploy NetParameter (surgery.io.deploy_param)
    holding `weights`, checked first (shapes, and every parameter layer
    covered) so that Caffe never aborts and nothing is exported with layers
    left at their fillers."""
    from netio.nets import net_from_param
    return net_from_param(param, weights=weights, complete=True, warn=False)


def export(param, weights, out, name):
    """Write the deploy NetParameter `param` with `weights` as an ONNX graph
    called `name`, atomically; returns (out, number of ONNX nodes)."""
    onnx, _, _ = _onnx()
    net = load_deploy(param, weights)
    graph = to_onnx(param, net, name)
    del net
    with atomic_path(out) as tmp:
        onnx.save(graph, tmp)
    return out, len(graph.graph.node)
