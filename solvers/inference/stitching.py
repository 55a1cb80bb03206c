"""Stitching for images too large for one forward pass: tile geometry, the
tiles' windows, stitching their scores, or a downscale (the Predictor's
`predict_large` uses them; this module knows no net object).

Caffe keeps every blob and every convolution's im2col buffer of the whole
input in memory (about 8 KB per pixel of the 100-padded input for
full-width FCN-VGG16: the README's memory table) and aborts outright once
one buffer passes INT_MAX elements (2000x1500 at full width). So an image
over the pixel budget, or over INT_MAX, is cut into tiles that each fit,
and the tiles' scores are stitched.

Two properties of the net, both read from the prototxt (`tile_geometry`), make
the stitching exact:

- alignment: every tile starts at a multiple of the net's total stride (32
  for the VGG16/AlexNet/GoogLeNet FCNs), so each tile's pooling grid is the
  whole image's grid, shifted by whole cells;
- margin: tiles overlap, and only each tile's core, the part at least
  `margin` pixels from a cut, is kept. With the exact margin (half the
  receptive field of a score pixel plus one stride: 256 px for FCN-32s,
  288 px for FCN-8s) a core pixel's receptive field holds the same image
  pixels as in one pass; where it reaches past the image border both see
  the same zero padding.

Then the stitched scores equal one pass up to float rounding (the matrix
products run in a different blocking), which the tests check against one
pass. The exact margin needs tiles of at least four margins; with a
smaller pixel budget the margin is a quarter of the tile (`tile_plan`; at
the default 500x500 budget: 480 px tiles, 96 px margins), and pixels
closer to a cut than the exact margin see the tile's zero padding instead
of their neighbours: that border effect changes some labels along the seams.
"""
import math

import numpy as np
from PIL import Image

from netio.geometry import dilation, kernel, layer_param, stride as layer_stride

DEFAULT_MAX_PIXELS = 500 * 500     # the papers' largest inputs still go in one pass


def tile_geometry(net_param):
    """(alignment, margin) in input pixels for a NetParameter (deploy net).

    Walks the layers keeping, per blob, the stride of its grid and the
    receptive field of one of its cells (both in input pixels): convolution
    and pooling grow the field by (k - 1) strides and multiply the stride;
    a deconvolution reaches ceil(k / s) input cells and divides the stride;
    other layers (crop, eltwise, concat, scale, ...) take the largest of
    their bottoms. alignment = the coarsest stride; margin = half the
    output's receptive field plus one stride, rounded up to the alignment.
    """
    grid = {}                                   # blob -> (stride, field)
    for layer in net_param.layer:
        ins = [grid.get(b, (1.0, 1.0)) for b in layer.bottom]
        stride = max((s for s, _ in ins), default=1.0)
        field = max((f for _, f in ins), default=1.0)
        if layer.type in ("Convolution", "Pooling"):
            p = layer_param(layer)
            if layer.type == "Pooling" and p.global_pooling:
                raise ValueError(f"layer {layer.name!r}: global pooling sees the whole image; "
                                 "such a net cannot be tiled")
            k, s = kernel(p) or 1, layer_stride(p)
            field += (dilation(p) * (k - 1)) * stride
            stride *= s
        elif layer.type == "Deconvolution":
            p = layer.convolution_param
            k, s = kernel(p) or 1, layer_stride(p)
            stride /= s
            field += (math.ceil(k / s) - 1) * stride * s
        for top in layer.top:
            grid[top] = (stride, field)
    if not grid:
        raise ValueError("the net has no layers")
    align = int(round(max(s for s, _ in grid.values())))
    out_field = max(f for _, f in grid.values())
    margin = int(math.ceil((out_field / 2 + align) / align) * align)
    return align, margin


def windows(length, tile, margin, align):
    """[(start, stop, core_start, core_stop)] cutting [0, length) into tiles of at
    most `tile` pixels whose cores tile [0, length) exactly; every start is a
    multiple of `align` and every cut core edge is `margin` inside its tile."""
    if tile % align or margin % align:
        raise ValueError(f"tile {tile} and margin {margin} must be multiples of the alignment {align}")
    if tile <= 2 * margin:
        raise ValueError(f"tile side {tile} leaves no core inside two margins of {margin} "
                         f"(needs more than {2 * margin})")
    out, start, core_start = [], 0, 0
    while True:
        stop = min(start + tile, length)
        core_stop = length if stop == length else stop - margin
        out.append((start, stop, core_start, core_stop))
        if stop == length:
            return out
        core_start, start = core_stop, core_stop - margin


def tile_plan(max_pixels, align, exact_margin):
    """(tile side, margin) for a pixel budget: the largest square tile (a
    multiple of `align`) within max_pixels, and the exact margin where it
    leaves at least half the tile as core, else a quarter of the tile (the
    border effect of the module docstring; the README gives its size)."""
    side = max(2 * align, math.isqrt(int(max_pixels)) // align * align)
    quarter = max(align, side // 4 // align * align)
    return side, min(exact_margin, quarter)


def stitched(forward, chw, side, margin, align):
    """{blob: C x H x W} scores of a 3 x H x W preprocessed image through
    overlapping tiles of `side` whose cores stop `margin` short of each cut;
    forward(batch N x 3 x h x w) -> {blob: N x C x h x w}."""
    _, height, width = chw.shape
    out = {}
    for y0, y1, cy0, cy1 in windows(height, side, margin, align):
        for x0, x1, cx0, cx1 in windows(width, side, margin, align):
            scores = forward(np.ascontiguousarray(chw[None, :, y0:y1, x0:x1]))
            for blob, s in scores.items():
                if blob not in out:
                    out[blob] = np.empty((s.shape[1], height, width), np.float32)
                out[blob][:, cy0:cy1, cx0:cx1] = s[0, :, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return out


def downscaled_size(height, width, max_pixels):
    """(h, w) with the aspect ratio kept and h * w <= max_pixels."""
    scale = min(1.0, math.sqrt(max_pixels / float(height * width)))
    return max(1, int(height * scale)), max(1, int(width * scale))


def downscale(rgb, max_pixels):
    """An H x W x 3 uint8 image resized (Lanczos) to fit in max_pixels."""
    h, w = downscaled_size(rgb.shape[0], rgb.shape[1], max_pixels)
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.LANCZOS))


def upscale_scores(scores, height, width):
    """C x h x w float32 scores resized bilinearly back to C x height x width."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(c, np.float32), "F")
                                .resize((width, height), Image.BILINEAR)) for c in scores])
