"""Bilinear interpolation weights for the FCN upsampling deconvolutions.

FCN initialises (and, for the final upsampling, freezes) every `upscore*`
Deconvolution to bilinear interpolation, applied to each class channel on its
own. A deconvolution's weight blob is (C_in, C_out / group, k, k), so
per-channel interpolation means input channel i feeds only output channel i:
the kernel on the diagonal of each group's block, zeros elsewhere.
"""
import numpy as np

from .errors import SurgeryError

UPSAMPLING_PREFIX = "upscore"


def bilinear_kernel(size):
    """The size x size bilinear kernel (odd: peak 1 at the centre; even: centred
    between the two middle taps), which interpolates at stride (size + 1) // 2."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(size) - center) / factor
    return np.outer(ramp, ramp)


def upsampling_layers(net):
    """Names of the Deconvolution layers named as FCN upsamplings (upscore*)."""
    return [name for name, layer in zip(net._layer_names, net.layers)
            if layer.type == "Deconvolution" and name.startswith(UPSAMPLING_PREFIX)]


def _channels_per_group(net, name):
    """C_out / group of a deconvolution whose outputs can mirror its inputs."""
    weights = net.params[name][0].data
    c_in, per_group, kh, kw = weights.shape
    c_out = net.blobs[net.top_names[name][0]].data.shape[1]
    if kh != kw:
        raise SurgeryError(f"interp {name!r}: kernel {kh}x{kw} is not square")
    if c_out != c_in:
        raise SurgeryError(
            f"interp {name!r}: {c_in} input channels but {c_out} output channels; "
            f"per-channel interpolation needs as many outputs as inputs "
            f"(weights {weights.shape})")
    return per_group


def interp(net, layer_names):
    """Set each named deconvolution to per-channel bilinear interpolation.

    Handles the full diagonal layout (group 1, weights CxCxkxk), depthwise
    (group C, weights Cx1xkxk), any group in between, and the single-channel
    case; biases, if any, are zeroed. Raises SurgeryError for non-square
    kernels or channel counts that cannot map each channel to itself.
    """
    for name in layer_names:
        if name not in net.params:
            raise SurgeryError(f"interp: net has no layer {name!r} with parameters")
        per_group = _channels_per_group(net, name)
        blobs = net.params[name]
        weights = blobs[0].data
        weights[...] = 0
        channels = np.arange(weights.shape[0])
        weights[channels, channels % per_group] = bilinear_kernel(weights.shape[-1])
        if len(blobs) > 1:
            blobs[1].data[...] = 0
