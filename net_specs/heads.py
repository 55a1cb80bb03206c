"""FCN scoring heads: coarse scores, skip fusion and in-network upsampling.

Layer names follow the published models (score_fr, upscore2, score_pool4,
score_pool4c, fuse_pool4, upscore_pool4, score_pool3, score_pool3c,
fuse_pool3, upscore8, upscore16, upscore, score); a head suffix (SIFT Flow's
`_sem`/`_geo`) is appended to every name, before the crop's `c`.
Every crop offset comes from caffe.coord_map, never from a constant.
"""
from caffe import layers as L, params as P

from common.errors import InputError

from .align import crop
from .trunks import FROZEN, LEARN

# Skip stages of each stride: (skip source, scale of the at-once variant).
SKIPS = {32: (), 16: (("pool4", 0.01),), 8: (("pool4", 0.01), ("pool3", 0.0001))}


def score_layer(bottom, n_out):
    """1x1 classifier; zero-initialised (Caffe's default constant filler)."""
    return L.Convolution(bottom, num_output=n_out, kernel_size=1, pad=0, param=LEARN)


def upsample(bottom, n_out, factor, kernel=None):
    """Deconvolution fixed to bilinear interpolation by surgery (lr_mult 0)."""
    return L.Deconvolution(bottom, convolution_param=dict(
        num_output=n_out, kernel_size=kernel or 2 * factor, stride=factor, bias_term=False),
        param=FROZEN)


def skip_head(n, coarse, feats, data, stride, n_out, suffix="", atonce=False, kernel32=64):
    """Upsample `coarse` (stride 32) to `data`, fusing the pool4/pool3 skips.

    Returns the final `score` top. FCN-32s: one x32 upsampling; FCN-16s:
    x2, fuse pool4, x16; FCN-8s: x2, fuse pool4, x2, fuse pool3, x8.
    """
    s = suffix
    if stride not in SKIPS:
        raise InputError(f"stride must be one of {sorted(SKIPS)}, got {stride}")
    if stride == 32:
        n["upscore" + s] = upsample(coarse, n_out, 32, kernel=kernel32)
        n["score" + s] = crop(n["upscore" + s], data)
        return n["score" + s]
    top, up_name = coarse, "upscore2"
    skips = SKIPS[stride]
    for i, (pool, scale) in enumerate(skips):
        n[up_name + s] = upsample(top, n_out, 2)
        source = feats[pool]
        if atonce:
            n[f"scale_{pool}{s}"] = L.Scale(source, filler=dict(type="constant", value=scale),
                                            param=FROZEN)
            source = n[f"scale_{pool}{s}"]
        n[f"score_{pool}{s}"] = score_layer(source, n_out)
        n[f"score_{pool}{s}c"] = crop(n[f"score_{pool}{s}"], n[up_name + s])
        n[f"fuse_{pool}{s}"] = L.Eltwise(n[up_name + s], n[f"score_{pool}{s}c"],
                                         operation=P.Eltwise.SUM)
        top = n[f"fuse_{pool}{s}"]
        up_name = f"upscore_{pool}"
    final = f"upscore{stride}"
    n[final + s] = upsample(top, n_out, stride)
    n["score" + s] = crop(n[final + s], data)
    return n["score" + s]


def fcn_head(n, feats, data, stride, n_out, suffix="", atonce=False, kernel32=64):
    """score_fr on the trunk's output, then the skip architecture."""
    n["score_fr" + suffix] = score_layer(feats["out"], n_out)
    return skip_head(n, n["score_fr" + suffix], feats, data, stride, n_out,
                     suffix, atonce, kernel32)
