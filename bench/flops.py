"""The one FLOP counter: multiply-accumulates of a live caffe.Net's
Convolution and Deconvolution layers, read from its blob and param shapes.

Convolution:   MACs = top elements    * (C_in / group)  * kh * kw
Deconvolution: MACs = bottom elements * (C_out / group) * kh * kw
(a deconvolution is the transposed convolution, so the roles of its input
and output swap; this is the GEMM work Caffe does). Caffe's weight blobs
already hold the per-group channel count in axis 1 for both types. Other
layers (pooling, ReLU, crop, eltwise, LRN) are memory-bound and left out.
"""
import numpy as np

CONV_TYPES = ("Convolution", "Deconvolution")


def layer_macs(net):
    """[(layer name, type, MACs)] of every Convolution / Deconvolution layer."""
    out = []
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type not in CONV_TYPES:
            continue
        w = net.params[name][0].data.shape        # (a, b / group, kh, kw)
        per_elem = int(np.prod(w[1:]))
        ref = net.top_names[name][0] if layer.type == "Convolution" else net.bottom_names[name][0]
        out.append((name, layer.type, net.blobs[ref].count * per_elem))
    return out


def forward_macs(net):
    return sum(m for _, _, m in layer_macs(net))


def backward_macs(net, proto):
    """MACs of backward as Caffe runs it in training: a weight gradient where
    the weights learn (lr_mult != 0) and an input gradient unless the bottom
    is a net input (data): each costs as much as the forward product."""
    layers = {l.name: l for l in proto.layer}
    inputs = set(net.inputs)
    total = 0
    for name, _, macs in layer_macs(net):
        param = layers[name].param
        if not param or param[0].lr_mult != 0:
            total += macs
        if net.bottom_names[name][0] not in inputs:
            total += macs
    return total


def gflop(macs):
    """GFLOP of `macs` multiply-accumulates (2 FLOP each)."""
    return 2 * macs / 1e9


def rate(gmac, ms):
    """GFLOP/s of `gmac` billion multiply-adds done in `ms`; None without any."""
    return gflop(gmac * 1e9) / (ms / 1e3) if gmac else None
