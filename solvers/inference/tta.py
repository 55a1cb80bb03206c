"""Test-time augmentation: class probabilities averaged over rescaled and
mirrored copies of an image, at the image's own resolution.

    --scales 0.5,0.75,1,1.25,1.5 --flip      (solvers.score, solvers.infer, eval_published)

For each scale s the preprocessed input (C x H x W, mean already removed)
is resized bilinearly to round(s H) x round(s W) -- resizing commutes with
subtracting a constant mean -- and, with --flip, also mirrored left-right;
each copy's scores are mirrored back, resized bilinearly to exactly H x W,
turned into probabilities (softmax over classes) and averaged. Scale 1 is
used as is, without a resize. The caller's `run` decides how a copy goes
through the net: in one pass or, when the scaled copy exceeds one pass, in
the stitched tiles of stitching.py.

Without augmentation (scales (1,), no flip) `augmented_scores` returns the
net's raw scores untouched, so results are bit for bit those of a run
without these flags; with it, the "scores" are the averaged probabilities
(their argmax is the prediction).
"""
import argparse
import math

import numpy as np

from .stitching import upscale_scores

PLAIN = (1.0,)


def parse_scales(text):
    """'0.5,0.75,1' -> (0.5, 0.75, 1.0): positive finite numbers, no repeats."""
    try:
        scales = tuple(float(s) for s in str(text).split(","))
    except ValueError:
        scales = ()
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"--scales must be positive numbers separated by commas, e.g. "
                         f"0.5,0.75,1,1.25,1.5, got {text!r}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"--scales lists a scale twice: {text!r}")
    return scales


def is_plain(scales, flip):
    """Whether (scales, flip) asks for no augmentation at all."""
    return tuple(float(s) for s in scales) == PLAIN and not flip


def scales_flag(text):
    """parse_scales for argparse (its message kept)."""
    try:
        return parse_scales(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_tta_args(parser):
    """--scales and --flip, the same in every CLI that predicts."""
    parser.add_argument("--scales", type=scales_flag, default=PLAIN, metavar="S,S,...",
                        help="test-time augmentation: average class probabilities over these "
                             "input scales (e.g. 0.5,0.75,1,1.25,1.5; default 1: none)")
    parser.add_argument("--flip", action="store_true",
                        help="test-time augmentation: also average over left-right mirrored inputs")


def scaled_size(height, width, scale):
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize(chw, height, width):
    """C x h x w float32 resized bilinearly to C x height x width (a copy as is at the same size)."""
    chw = np.asarray(chw, np.float32)
    if chw.shape[1:] == (height, width):
        return chw.copy()
    return upscale_scores(chw, height, width)


def softmax(scores):
    """Probabilities over axis 0 (classes) of C x H x W scores, float64."""
    z = np.asarray(scores, np.float64)
    z = np.exp(z - z.max(axis=0, keepdims=True))
    return z / z.sum(axis=0, keepdims=True)


def mirror(chw):
    return np.ascontiguousarray(chw[..., ::-1])


def augmented_scores(run, inputs, scales=PLAIN, flip=False):
    """{score blob: C x H x W} for one image.

    `inputs`: {input name: C x H x W float32 preprocessed blob}, all H x W;
    `run(inputs)` -> {score blob: C x h x w} forwards one copy of the same
    shape. Plain (scales (1,), no flip): run's scores as they come; else the
    mean of the copies' softmax probabilities (float32)."""
    sizes = {np.shape(x)[1:] for x in inputs.values()}
    if len(sizes) != 1:
        raise ValueError(f"the inputs differ in size: {sorted(sizes)}")
    height, width = sizes.pop()
    if is_plain(scales, flip):
        return run(inputs)
    total, copies = {}, 0
    for scale in scales:
        h, w = scaled_size(height, width, scale)
        scaled = {name: resize(x, h, w) for name, x in inputs.items()}
        for mirrored in ((False, True) if flip else (False,)):
            copy = {name: mirror(x) for name, x in scaled.items()} if mirrored else scaled
            for blob, scores in run(copy).items():
                scores = mirror(scores) if mirrored else scores
                probs = softmax(resize(scores, height, width))
                total[blob] = total[blob] + probs if blob in total else probs
            copies += 1
    return {blob: (p / copies).astype(np.float32) for blob, p in total.items()}


def deploy_runner(net, net_param, input_names, score_blobs, max_pixels):
    """`run` for augmented_scores on a deploy net with one or more inputs:
    a copy within max_pixels (and Caffe's INT_MAX per buffer) goes through in
    one pass, a larger one in stitching.py's tiles (the inputs
    stacked along channels, so every input is cut the same way). Without
    `net_param` (the deploy NetParameter) every copy goes in one pass."""
    from netio.geometry import INT_MAX, largest_buffer

    from . import stitching
    channels = [int(net.blobs[name].data.shape[1]) for name in input_names]
    cuts = np.cumsum(channels)[:-1]

    def forward_stacked(batch):
        for name, part in zip(input_names, np.split(batch, cuts, axis=1)):
            net.blobs[name].reshape(*part.shape)
        net.reshape()
        for name, part in zip(input_names, np.split(batch, cuts, axis=1)):
            net.blobs[name].data[...] = part
        net.forward()
        return {blob: net.blobs[blob].data.copy() for blob in score_blobs}

    def run(inputs):
        stacked = np.concatenate([np.asarray(inputs[name], np.float32) for name in input_names])
        height, width = stacked.shape[1:]
        if net_param is None or ((not max_pixels or height * width <= max_pixels) and
                                 largest_buffer(net_param, height, width) <= INT_MAX):
            return {blob: s[0] for blob, s in forward_stacked(stacked[None]).items()}
        align, exact_margin = stitching.tile_geometry(net_param)
        side, margin = stitching.tile_plan(max_pixels or height * width, align, exact_margin)
        return stitching.stitched(forward_stacked, stacked, side, margin, align)
    return run
