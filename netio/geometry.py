"""Net geometry read from a NetParameter, without building the net: a
layer's kernel, stride, pad and dilation in whichever form Caffe accepts
(repeated, scalar, or _h/_w), and every blob's shape for an input size --
Caffe itself aborts once one buffer passes INT_MAX elements."""
import numpy as np

INT_MAX = 2 ** 31 - 1      # Caffe's CHECK on every blob's element count


def _hw_fields(param, name):
    """The _h/_w field names of a spatial parameter (kernel_size -> kernel_h), if any."""
    stem = "kernel" if name == "kernel_size" else name
    h, w = f"{stem}_h", f"{stem}_w"
    return (h, w) if h in param.DESCRIPTOR.fields_by_name else (None, None)


def spatial(param, name, default):
    """A ConvolutionParameter's (repeated) or PoolingParameter's (scalar)
    spatial field `name` -- kernel_size, stride, pad, dilation -- as [h, w];
    the _h/_w fields win where set, as in Caffe."""
    h, w = _hw_fields(param, name)
    if h and (param.HasField(h) or param.HasField(w)):
        return [getattr(param, h), getattr(param, w)]
    field = param.DESCRIPTOR.fields_by_name[name]
    if field.label == field.LABEL_REPEATED:
        values = list(getattr(param, name))
        if not values:
            return [default, default]
        return values * 2 if len(values) == 1 else values[:2]
    value = getattr(param, name) if param.HasField(name) else default
    return [value, value]


def layer_param(layer):
    """The convolution_param or pooling_param of a (de)convolution or pooling layer."""
    return layer.pooling_param if layer.type == "Pooling" else layer.convolution_param


def kernel(p):
    """The kernel side (height) of a convolution_param or pooling_param, or None."""
    return spatial(p, "kernel_size", None)[0] or None


def stride(p):
    """The stride (height) of a convolution_param or pooling_param."""
    return spatial(p, "stride", 1)[0] or 1


def pad(p):
    """The padding (height) of a convolution_param or pooling_param."""
    return spatial(p, "pad", 0)[0]


def dilation(p):
    """The dilation of a convolution_param (1 for pooling)."""
    return spatial(p, "dilation", 1)[0] if "dilation" in p.DESCRIPTOR.fields_by_name else 1


def _out(size, k, s, p, dil=1, ceil=False):
    span = size + 2 * p - (dil * (k - 1) + 1)
    return (-(-span // s) if ceil else span // s) + 1


def largest_buffer(net_param, height, width):
    """The most elements any blob or im2col buffer of the net holds for an
    H x W input (Caffe aborts past INT_MAX)."""
    shapes, col = blob_shapes(net_param, height, width)
    return max([col] + [int(np.prod(shape)) for shape in shapes.values()])


def blob_shapes(net_param, height, width):
    """({top: (C, H, W)}, largest im2col buffer) for an H x W input, walked
    through the layers as Caffe computes them (without building the net,
    which would abort past INT_MAX)."""
    shapes, largest = {}, 0
    for layer in net_param.layer:
        bottoms = [shapes[b] for b in layer.bottom if b in shapes]
        c, h, w = bottoms[0] if bottoms else (0, height, width)
        col = 0
        if layer.type == "Input":
            outs = [(int(s.dim[1]), height, width) for s in layer.input_param.shape]
        elif layer.type in ("Convolution", "Pooling"):
            p = layer_param(layer)
            k, s, pd, dil = kernel(p) or 1, stride(p), pad(p), dilation(p)
            ceil = layer.type == "Pooling"
            h, w = _out(h, k, s, pd, dil, ceil), _out(w, k, s, pd, dil, ceil)
            if layer.type == "Convolution":
                if (k, s, pd) != (1, 1, 0):
                    col = c * k * k * h * w
                c = p.num_output
            outs = [(c, h, w)] * len(layer.top)
        elif layer.type == "Deconvolution":
            p = layer.convolution_param
            k, s, pd = kernel(p) or 1, stride(p), pad(p)
            col = p.num_output * k * k * h * w
            c, h, w = p.num_output, s * (h - 1) + k - 2 * pd, s * (w - 1) + k - 2 * pd
            outs = [(c, h, w)]
        elif layer.type == "Crop" and len(bottoms) == 2:
            outs = [(c,) + bottoms[1][1:]]
        elif layer.type == "Concat" and bottoms:
            outs = [(sum(b[0] for b in bottoms), h, w)]
        else:
            outs = [(c, h, w)] * len(layer.top)
        shapes.update(zip(layer.top, outs))
        largest = max(largest, col)
    return shapes, largest
