"""The same FCN in PyTorch, built generically from the Caffe net, for a speed
reference and an independent check of Caffe's output.

    python -m bench.torch_ref                                 # FCN-8s/AlexNet/GoogLeNet at 500x500
    python -m bench.torch_ref --models voc-fcn8s --size 256x256 --runs 3
    python -m bench.torch_ref --check --size 97x131           # max |caffe - torch| only

`TorchNet` walks the NetParameter's layers in order and keeps a dict of named
blobs, exactly like Caffe; weights are copied from the live caffe.Net, so the
two compute the same function. Caffe-specific semantics it reproduces:
pooling rounds up (torch's ceil_mode has Caffe's "last window starts inside
the padded input" rule), Crop takes crop_param offsets, Eltwise SUM its
coefficients, LRN divides alpha by the window size (as torch does).
The timing ratio compares Caffe's forward (bench.fcn_speed, its own child)
with torch's forward in the next child, so the OpenMP pool of torch and the
pthreads of OpenBLAS never compete for the cores.
"""

import numpy as np

from . import common

MODELS = ("voc-fcn8s", "voc-fcn-alexnet", "voc-fcn-googlenet")
SIZE = "500x500"


def _pair(p, name, default):
    """(h, w) of a Caffe conv/pool field that may be repeated, scalar or _h/_w."""
    hw = name.replace("_size", "")                      # kernel_size -> kernel_h / kernel_w
    if p.HasField(hw + "_h") or p.HasField(hw + "_w"):
        return getattr(p, hw + "_h"), getattr(p, hw + "_w")
    v = getattr(p, name)
    if isinstance(v, int):
        return (v, v) if p.HasField(name) else (default, default)
    v = list(v)
    return (default, default) if not v else (v[0], v[-1])


def _conv_args(p):
    return dict(stride=_pair(p, "stride", 1), padding=_pair(p, "pad", 0),
                dilation=(list(p.dilation) or [1])[0], groups=p.group)


class TorchNet:
    """A caffe NetParameter evaluated with torch ops and the caffe.Net's weights."""

    def __init__(self, proto, net):
        import torch
        self.torch = torch
        self.layers = [l for l in proto.layer if not any(r.phase == 0 for r in l.include)]
        self.params = {name: [torch.from_numpy(b.data.copy()) for b in blobs]
                       for name, blobs in net.params.items()}

    def __call__(self, inputs):
        """inputs: {blob name: ndarray}; returns every blob as a torch tensor."""
        torch = self.torch
        blobs = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in inputs.items()}
        with torch.inference_mode():
            for layer in self.layers:
                if layer.type == "Input":
                    continue
                bottoms = [blobs[b] for b in layer.bottom]
                tops = self.run(layer, bottoms, self.params.get(layer.name, []))
                for name, value in zip(layer.top, tops if isinstance(tops, list) else [tops]):
                    blobs[name] = value
        return blobs

    def run(self, layer, x, w):
        import torch.nn.functional as F
        t = layer.type
        if t == "Convolution":
            p = layer.convolution_param
            return F.conv2d(x[0], w[0], w[1] if len(w) > 1 else None, **_conv_args(p))
        if t == "Deconvolution":
            p = layer.convolution_param
            return F.conv_transpose2d(x[0], w[0], w[1] if len(w) > 1 else None, **_conv_args(p))
        if t == "ReLU":
            slope = layer.relu_param.negative_slope
            return F.leaky_relu(x[0], slope) if slope else F.relu(x[0])
        if t == "Pooling":
            return self.pool(layer.pooling_param, x[0])
        if t == "Dropout":
            return x[0]                                  # identity at test time (Caffe scales in training)
        if t == "Crop":
            return self.crop(layer.crop_param, x[0], x[1])
        if t == "Eltwise":
            return self.eltwise(layer.eltwise_param, x)
        if t == "Scale":
            return self.scale(layer.scale_param, x, w)
        if t == "LRN":
            p = layer.lrn_param
            if p.norm_region != p.ACROSS_CHANNELS:
                raise NotImplementedError("LRN WITHIN_CHANNEL")
            return F.local_response_norm(x[0], p.local_size, p.alpha, p.beta, p.k)
        if t == "Concat":
            axis = layer.concat_param.axis if layer.concat_param.HasField("axis") else \
                (layer.concat_param.concat_dim if layer.concat_param.HasField("concat_dim") else 1)
            return self.torch.cat(x, axis)
        if t == "Softmax":
            return F.softmax(x[0], layer.softmax_param.axis)
        raise NotImplementedError(f"layer {layer.name}: type {t} has no torch equivalent here")

    def pool(self, p, x):
        import torch.nn.functional as F
        k = (x.shape[2], x.shape[3]) if p.global_pooling else _pair(p, "kernel_size", 0)
        s, pad = ((1, 1), (0, 0)) if p.global_pooling else (_pair(p, "stride", 1), _pair(p, "pad", 0))
        if p.pool == p.MAX:
            return F.max_pool2d(x, k, s, pad, ceil_mode=True)
        if p.pool == p.AVE:                              # Caffe counts the padding in the divisor
            return F.avg_pool2d(x, k, s, pad, ceil_mode=True, count_include_pad=True)
        raise NotImplementedError("stochastic pooling")

    @staticmethod
    def crop(p, x, like):
        axis = p.axis % x.dim()
        offsets = list(p.offset) or [0]
        index = [slice(None)] * x.dim()
        for i, a in enumerate(range(axis, x.dim())):
            off = offsets[i] if len(offsets) > 1 else offsets[0]
            index[a] = slice(off, off + like.shape[a])
        return x[tuple(index)]

    def eltwise(self, p, x):
        if p.operation == p.PROD:
            out = x[0]
            for y in x[1:]:
                out = out * y
            return out
        if p.operation == p.MAX:
            return self.torch.stack(x).amax(0)
        coeff = list(p.coeff) or [1.0] * len(x)
        return sum(c * y for c, y in zip(coeff, x))

    def scale(self, p, x, w):
        factor = x[1] if len(x) > 1 else w[0]
        axis = p.axis % x[0].dim()
        shape = [1] * axis + list(factor.shape) + [1] * (x[0].dim() - axis - factor.dim())
        out = x[0] * factor.reshape(shape)
        if p.bias_term:
            out = out + w[-1].reshape(shape)
        return out


def caffe_and_torch(model, size, seed=0, loss=False):
    """A randomly filled caffe.Net, its TorchNet twin and the shared inputs."""
    proto = common.deploy_proto(model, common.parse_size(size), loss=loss)
    net = common.load_net(proto)
    common.fill_random(net, seed)
    common.fill_inputs(net, seed)
    inputs = {k: net.blobs[k].data.copy() for k in net.inputs}
    return net, TorchNet(proto, net), inputs


def compare(model, size, seed=0):
    """max |caffe - torch| over the net's outputs, and the output scale max |caffe|."""
    net, tnet, inputs = caffe_and_torch(model, size, seed)
    ref = {k: v.copy() for k, v in net.forward().items()}
    got = tnet(inputs)
    diff = scale = 0.0
    for name, r in ref.items():
        g = got[name].numpy()
        if g.shape != r.shape:
            raise AssertionError(f"{model} {size} {name}: torch {g.shape} vs caffe {r.shape}")
        diff, scale = max(diff, float(np.abs(g - r).max())), max(scale, float(np.abs(r).max()))
    return dict(model=model, size=size, outputs=sorted(ref), max_abs_diff=diff, scale=scale)


def time_torch(model, size, runs, threads):
    """Torch forward of the model in this process (call it in a child)."""
    import torch
    torch.set_num_threads(threads)
    _, tnet, inputs = caffe_and_torch(model, size)
    common.reset_peak_rss()     # the Caffe net that lent its weights is gone: count torch alone
    t = common.timeit(lambda: tnet(inputs), runs)
    return dict(model=model, size=size, torch=torch.__version__, threads=threads,
                peak_rss_mb=common.peak_rss_mb(), **t)


def run(models, size, runs, threads=None, log=print):
    """Caffe/PyTorch forward ratio per model: a Caffe child (bench.fcn_speed)
    and then a torch child, back to back so both see the same machine."""
    from . import fcn_speed
    threads = threads or common.N_CORES
    rows = []
    for model in models:
        c = fcn_speed.run([(model, size, "fwd", runs)], threads, log=log)[0]
        t = common.run_child("torch_ref", [model, size, runs, threads], env=common.thread_env(threads))
        row = dict(model=model, size=size, threads=threads, caffe_ms=c.get("ms"), torch_ms=t.get("ms"),
                   torch=t.get("torch"), error=c.get("error") or t.get("error"))
        if row["caffe_ms"] and row["torch_ms"]:
            row["ratio"] = row["caffe_ms"] / row["torch_ms"]
        log(f"  torch {model} {size}: " + (row["error"] or f"{row['torch_ms']:.0f} ms"))
        rows.append(row)
    return rows


COLUMNS = [("model", "model", None), ("size", "input", None), ("threads", "threads", None),
           ("caffe_ms", "Caffe ms", "{:.0f}"), ("torch_ms", "PyTorch ms", "{:.0f}"),
           ("ratio", "Caffe / PyTorch", "{:.2f}")]


def main(argv=None):
    p = common.model_parser(__doc__, MODELS, SIZE)
    p.add_argument("--check", action="store_true", help="only compare the outputs")
    args = p.parse_args(argv)
    if args.child:
        model, size, runs, threads = args.config
        common.emit(time_torch(model, size, int(runs), int(threads)))
        return
    models = args.models.split(",")
    if args.check:
        for m in models:
            r = compare(m, args.size)
            print(f"{m} {args.size}: max |caffe - torch| = {r['max_abs_diff']:.3g} "
                  f"(output scale {r['scale']:.3g}, relative {r['max_abs_diff'] / r['scale']:.2g})")
        return
    print(common.markdown(run(models, args.size, args.runs, args.threads), COLUMNS))


if __name__ == "__main__":
    main()
