"""The FCN initialisation recipe, in one place for the CLI and the solver.

Transplant by name (fully connected layers coerced to convolutions), give
an early-fusion first conv (conv1_1_bgrd) the color filters plus their mean
for depth, then set every upsampling deconvolution to bilinear.
"""
from .bilinear import interp, upsampling_layers
from .expand import init_color_depth
from .transplant import transplant

COLOR_DEPTH = ("conv1_1", "conv1_1_bgrd")


def initialise(src, dst, suffix="", verbose=True):
    """Apply the recipe from `src` (a caffe.Net or netio.nets.Caffemodel) to
    the caffe.Net `dst`; returns the transplant report."""
    report = transplant(src, dst, suffix=suffix, verbose=verbose)
    color, bgrd = COLOR_DEPTH
    if not suffix and color in src.params and bgrd in dst.params and bgrd not in src.params:
        init_color_depth(src, dst, color, bgrd)
        if verbose:
            print(f"color-depth: {bgrd} <- {color} (depth channel = mean of the color filters)")
    ups = upsampling_layers(dst)
    interp(dst, ups)
    if verbose:
        print(f"bilinear: {', '.join(ups) or 'no upscore* deconvolutions'}")
    return report
