"""ImageNet trunks as fully convolutional feature extractors.

Each trunk adds its layers to a NetSpec under the published layer names (so
ILSVRC caffemodels transplant by name) and returns the tops the FCN heads
need: `out` (the last feature map, stride 32) and, where the trunk has them,
the skip sources `pool4` (stride 16) and `pool3` (stride 8).
"""
from dataclasses import dataclass
from typing import Callable

from caffe import layers as L, params as P

from common.errors import InputError

# Parameter multipliers of the reference models.
LEARN = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
FROZEN = [dict(lr_mult=0)]

# Channel configuration of VGG16 (ILSVRC-2014 16-layer): blocks of 3x3 convs.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_FC = 4096


def conv_relu(bottom, nout, ks=3, stride=1, pad=1, group=1, param=LEARN):
    kw = dict(kernel_size=ks, stride=stride, num_output=nout, pad=pad)
    if group != 1:
        kw["group"] = group
    if param is not None:
        kw["param"] = param
    conv = L.Convolution(bottom, **kw)
    return conv, L.ReLU(conv, in_place=True)


def max_pool(bottom, ks=2, stride=2):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def scaled(channels, width):
    """Channel count of a narrowed trunk (width < 1 for the demo's stand-in)."""
    return max(1, int(round(channels * width)))


def vgg16(n, bottom, suffix="", width=1.0, first_conv="conv1_1", pad=100, fc=True):
    """VGG16 conv1_1..pool5 (+ fc6/fc7 as 7x7 and 1x1 convolutions).

    `pad=100` on the first conv is the FCN trick that makes the output cover
    inputs of any size; the ILSVRC classifier uses pad=1.
    """
    s = suffix
    top = bottom
    for b, block in enumerate(VGG16_BLOCKS, start=1):
        for i, ch in enumerate(block, start=1):
            name = f"conv{b}_{i}"
            conv_name = first_conv + s if (b, i) == (1, 1) else name + s
            n[conv_name], n[f"relu{b}_{i}{s}"] = conv_relu(
                top, scaled(ch, width), pad=pad if (b, i) == (1, 1) else 1)
            top = n[f"relu{b}_{i}{s}"]
        n[f"pool{b}{s}"] = max_pool(top)
        top = n[f"pool{b}{s}"]
    feats = {"pool3": n["pool3" + s], "pool4": n["pool4" + s], "pool5": n["pool5" + s]}
    if fc:
        fc_dim = scaled(VGG16_FC, width)
        n["fc6" + s], n["relu6" + s] = conv_relu(top, fc_dim, ks=7, pad=0)
        n["drop6" + s] = L.Dropout(n["relu6" + s], dropout_ratio=0.5, in_place=True)
        n["fc7" + s], n["relu7" + s] = conv_relu(n["drop6" + s], fc_dim, ks=1, pad=0)
        n["drop7" + s] = L.Dropout(n["relu7" + s], dropout_ratio=0.5, in_place=True)
        feats["out"] = n["drop7" + s]
    return feats


def alexnet(n, bottom, width=1.0, pad=100, fc=True, lrn_first=False):
    """AlexNet/CaffeNet conv1..pool5 (+ fc6 6x6 and fc7 1x1 convolutions).

    FCN-AlexNet follows the CaffeNet order (pool, then LRN) and, like the
    reference, leaves the trunk at Caffe's default multipliers; the BVLC
    AlexNet classifier normalises before pooling (`lrn_first`). Both share
    parameter names and shapes, so either caffemodel transplants.
    """
    w = lambda c: scaled(c, width)  # noqa: E731
    n.conv1, n.relu1 = conv_relu(bottom, w(96), ks=11, stride=4, pad=pad, param=None)

    def pool_norm(top, i):
        if lrn_first:
            n[f"norm{i}"] = L.LRN(top, local_size=5, alpha=1e-4, beta=0.75)
            n[f"pool{i}"] = max_pool(n[f"norm{i}"], 3, 2)
            return n[f"pool{i}"]
        n[f"pool{i}"] = max_pool(top, 3, 2)
        n[f"norm{i}"] = L.LRN(n[f"pool{i}"], local_size=5, alpha=1e-4, beta=0.75)
        return n[f"norm{i}"]

    top = pool_norm(n.relu1, 1)
    n.conv2, n.relu2 = conv_relu(top, w(256), ks=5, pad=2, group=2, param=None)
    top = pool_norm(n.relu2, 2)
    n.conv3, n.relu3 = conv_relu(top, w(384), ks=3, pad=1, param=None)
    n.conv4, n.relu4 = conv_relu(n.relu3, w(384), ks=3, pad=1, group=2, param=None)
    n.conv5, n.relu5 = conv_relu(n.relu4, w(256), ks=3, pad=1, group=2, param=None)
    n.pool5 = max_pool(n.relu5, 3, 2)
    feats = {"pool5": n.pool5}
    if fc:
        n.fc6, n.relu6 = conv_relu(n.pool5, w(4096), ks=6, pad=0, param=None)
        n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
        n.fc7, n.relu7 = conv_relu(n.drop6, w(4096), ks=1, pad=0, param=None)
        n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
        feats["out"] = n.drop7
    return feats


# BVLC GoogLeNet inception modules: name -> (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)
INCEPTIONS = (
    ("3a", (64, 96, 128, 16, 32, 32)), ("3b", (128, 128, 192, 32, 96, 64)), "pool3",
    ("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)), "pool4",
    ("5a", (256, 160, 320, 32, 128, 128)), ("5b", (384, 192, 384, 48, 128, 128)),
)


def _inception(n, bottom, name, chans, width):
    c1, c3r, c3, c5r, c5, cp = (scaled(c, width) for c in chans)
    p = f"inception_{name}/"
    branches = []
    n[p + "1x1"], n[p + "relu_1x1"] = conv_relu(bottom, c1, ks=1, pad=0)
    branches.append(n[p + "relu_1x1"])
    n[p + "3x3_reduce"], n[p + "relu_3x3_reduce"] = conv_relu(bottom, c3r, ks=1, pad=0)
    n[p + "3x3"], n[p + "relu_3x3"] = conv_relu(n[p + "relu_3x3_reduce"], c3, ks=3, pad=1)
    branches.append(n[p + "relu_3x3"])
    n[p + "5x5_reduce"], n[p + "relu_5x5_reduce"] = conv_relu(bottom, c5r, ks=1, pad=0)
    n[p + "5x5"], n[p + "relu_5x5"] = conv_relu(n[p + "relu_5x5_reduce"], c5, ks=5, pad=2)
    branches.append(n[p + "relu_5x5"])
    n[p + "pool"] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
    n[p + "pool_proj"], n[p + "relu_pool_proj"] = conv_relu(n[p + "pool"], cp, ks=1, pad=0)
    branches.append(n[p + "relu_pool_proj"])
    n[p + "output"] = L.Concat(*branches)
    return n[p + "output"]


def googlenet(n, bottom, width=1.0, pad=100):
    """BVLC GoogLeNet up to inception_5b (stride 32), names as published.

    As in the paper's FCN-GoogLeNet, the final average pooling and the
    classifiers are discarded; the first conv gets the FCN pad instead of 3.
    """
    w = lambda c: scaled(c, width)  # noqa: E731
    n["conv1/7x7_s2"], n["conv1/relu_7x7"] = conv_relu(bottom, w(64), ks=7, stride=2, pad=pad)
    n["pool1/3x3_s2"] = max_pool(n["conv1/relu_7x7"], 3, 2)
    n["pool1/norm1"] = L.LRN(n["pool1/3x3_s2"], local_size=5, alpha=1e-4, beta=0.75)
    n["conv2/3x3_reduce"], n["conv2/relu_3x3_reduce"] = conv_relu(n["pool1/norm1"], w(64), ks=1, pad=0)
    n["conv2/3x3"], n["conv2/relu_3x3"] = conv_relu(n["conv2/relu_3x3_reduce"], w(192), ks=3, pad=1)
    n["conv2/norm2"] = L.LRN(n["conv2/relu_3x3"], local_size=5, alpha=1e-4, beta=0.75)
    n["pool2/3x3_s2"] = max_pool(n["conv2/norm2"], 3, 2)
    top = n["pool2/3x3_s2"]
    for item in INCEPTIONS:
        if isinstance(item, str):
            n[f"{item}/3x3_s2"] = max_pool(top, 3, 2)
            top = n[f"{item}/3x3_s2"]
        else:
            top = _inception(n, top, item[0], item[1], width)
    return {"out": top}


@dataclass(frozen=True)
class Trunk:
    """A feature trunk: `build(n, bottom, width=..., ...)` adds its layers and
    returns its features ({"out": ..., and the skip layers}); the kernel of
    its FCN-32s upsampling (the references': 64 for VGG16, 63 for AlexNet and
    GoogLeNet); the pooling layers FCN-16s/8s skip from (none: stride 32 only)."""
    name: str
    build: Callable
    upscore32_kernel: int
    skips: tuple = ()


TRUNKS = {t.name: t for t in (Trunk("vgg16", vgg16, 64, ("pool4", "pool3")),
                              Trunk("alexnet", alexnet, 63),
                              Trunk("googlenet", googlenet, 63))}


def get_trunk(name):
    """The Trunk record of `name`, or a ValueError naming the known ones."""
    try:
        return TRUNKS[name]
    except KeyError:
        raise InputError(f"unknown trunk {name!r}; known: {', '.join(TRUNKS)}") from None

