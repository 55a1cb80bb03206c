"""Widen a layer while keeping what it learned.

Two cases of the papers: a k-class score layer reused in a k' >= k class net
(the new classes start from their fresh initialisation), and the first conv
of the early color-depth fusion, whose 4th (depth) input channel starts as
the mean of the pretrained color filters.
"""
from .errors import SurgeryError


def _blobs(net, layer, role):
    if layer not in net.params:
        raise SurgeryError(f"{role} net has no layer {layer!r} with parameters")
    return net.params[layer]


def expand_score(net_old, net_new, layer):
    """Copy the old layer's k output channels (weights and biases) into the first
    k of the new layer's k' channels; the other k' - k keep their init."""
    old, new = _blobs(net_old, layer, "old"), _blobs(net_new, layer, "new")
    k, k_new = old[0].data.shape[0], new[0].data.shape[0]
    if k_new < k:
        raise SurgeryError(f"expand_score {layer!r}: new layer has {k_new} outputs, "
                           f"fewer than the old {k}; refusing to drop classes")
    if old[0].data.shape[1:] != new[0].data.shape[1:] or len(old) != len(new):
        raise SurgeryError(f"expand_score {layer!r}: per-class shapes differ: old "
                           f"{[b.data.shape for b in old]}, new {[b.data.shape for b in new]}")
    for o, n in zip(old, new):
        n.data[:k] = o.data


def init_color_depth(src_net, dst_net, src_layer="conv1_1", dst_layer="conv1_1_bgrd"):
    """Fill a 4-channel (B, G, R, depth) first conv from a 3-channel color one:
    color channels copied, depth channel = mean of the three color filters,
    biases copied."""
    src, dst = _blobs(src_net, src_layer, "source"), _blobs(dst_net, dst_layer, "target")
    w_src, w_dst = src[0].data, dst[0].data
    expected = (w_src.shape[0], w_src.shape[1] + 1) + w_src.shape[2:]
    if w_src.shape[1] != 3 or w_dst.shape != expected:
        raise SurgeryError(f"init_color_depth {src_layer!r} -> {dst_layer!r}: need a "
                           f"3-channel source and a target of shape {expected}; got "
                           f"{w_src.shape} -> {w_dst.shape}")
    w_dst[:, :3] = w_src
    w_dst[:, 3] = w_src.mean(axis=1)
    for s, d in zip(src[1:], dst[1:]):
        d.data[...] = s.data
