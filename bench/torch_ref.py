"""The same FCN in PyTorch, built generically from the Caffe net, for a speed
reference and an independent check of Caffe's output.

    python -m bench.torch_ref                                 # FCN-8s/AlexNet/GoogLeNet at 500x500
    python -m bench.torch_ref --models voc-fcn8s --size 256x256 --runs 3
    python -m bench.torch_ref --check --size 97x131           # max |caffe - torch| only

`TorchNet` walks the net's layers in order and keeps a dict of named blobs,
exactly like Caffe; weights are copied from the live caffe.Net, so the two
compute the same function. The layers reach it as plain data (`layer_specs`:
dicts read from the NetParameter), so a net exported by `export_plain` (a
JSON layer list and an .npz of weights, inputs and Caffe's outputs) runs in
another interpreter with torch and numpy but no caffe and any protobuf
(`--plain`; bench.gpu_check's torch column on the GPU). Caffe-specific semantics it reproduces:
pooling rounds up (torch's ceil_mode has Caffe's "last window starts inside
the padded input" rule), Crop takes crop_param offsets, Eltwise SUM its
coefficients, LRN divides alpha by the window size (as torch does).
The timing ratio compares Caffe's forward (bench.fcn_speed, its own child)
with torch's forward in the next child, so the OpenMP pool of torch and the
pthreads of OpenBLAS never compete for the cores.
"""
import os

import numpy as np

from netio.geometry import dilation, spatial

from . import common

MODELS = ("voc-fcn8s", "voc-fcn-alexnet", "voc-fcn-googlenet")
SIZE = "500x500"


# ---- the Caffe side: a NetParameter as plain data ------------------------------
def _pair(p, name, default):
    """(h, w) of a Caffe conv/pool field that may be repeated, scalar or _h/_w."""
    return tuple(spatial(p, name, default))


def _conv_args(p):
    return dict(stride=_pair(p, "stride", 1), padding=_pair(p, "pad", 0),
                dilation=dilation(p), groups=p.group)


def _pool_args(p):
    methods = {p.MAX: "max", p.AVE: "ave"}
    return dict(method=methods.get(p.pool, "stochastic"), global_pooling=p.global_pooling,
                kernel=_pair(p, "kernel_size", 0), stride=_pair(p, "stride", 1),
                padding=_pair(p, "pad", 0))


def _layer_args(layer):
    """What TorchNet needs of one layer's parameters, as plain values."""
    t = layer.type
    if t in ("Convolution", "Deconvolution"):
        return _conv_args(layer.convolution_param)
    if t == "ReLU":
        return dict(negative_slope=layer.relu_param.negative_slope)
    if t == "Pooling":
        return _pool_args(layer.pooling_param)
    if t == "Crop":
        return dict(axis=layer.crop_param.axis, offset=list(layer.crop_param.offset))
    if t == "Eltwise":
        p = layer.eltwise_param
        return dict(operation={p.PROD: "prod", p.MAX: "max"}.get(p.operation, "sum"),
                    coeff=list(p.coeff))
    if t == "Scale":
        return dict(axis=layer.scale_param.axis, bias_term=layer.scale_param.bias_term)
    if t == "LRN":
        p = layer.lrn_param
        return dict(local_size=p.local_size, alpha=p.alpha, beta=p.beta, k=p.k,
                    across_channels=p.norm_region == p.ACROSS_CHANNELS)
    if t == "Concat":
        p = layer.concat_param
        return dict(axis=p.axis if p.HasField("axis") else
                    (p.concat_dim if p.HasField("concat_dim") else 1))
    if t == "Softmax":
        return dict(axis=layer.softmax_param.axis)
    if t == "SoftmaxWithLoss":
        return _loss_args(layer.loss_param)
    return {}


def _loss_args(p):
    """SoftmaxWithLoss's ignored label and divisor, as Caffe resolves them:
    `normalization` if set, else the old `normalize` (true: VALID, false:
    BATCH_SIZE), else VALID."""
    modes = {p.FULL: "full", p.VALID: "valid", p.BATCH_SIZE: "batch_size", p.NONE: "none"}
    if p.HasField("normalization"):
        norm = modes[p.normalization]
    elif p.HasField("normalize"):
        norm = "valid" if p.normalize else "batch_size"
    else:
        norm = "valid"
    return dict(ignore_label=p.ignore_label if p.HasField("ignore_label") else None,
                normalization=norm)


def layer_specs(proto):
    """The test-phase layers of a NetParameter as plain dicts {name, type,
    bottom, top, args}: what another interpreter (torch, no caffe, any
    protobuf) needs to evaluate the net."""
    return [dict(name=l.name, type=l.type, bottom=list(l.bottom), top=list(l.top),
                 args=_layer_args(l))
            for l in proto.layer if not any(r.phase == 0 for r in l.include)]


def export_plain(proto, net, out_dir, name):
    """Write `name`.json (the layers, inputs, outputs) and `name`.npz (every
    parameter blob, the inputs, and Caffe's outputs for those inputs: call
    after a forward) into out_dir, for `load_plain` in another interpreter."""
    import json
    arrays = {f"param/{layer}/{i}": b.data for layer, blobs in net.params.items()
              for i, b in enumerate(blobs)}
    arrays.update({f"input/{k}": net.blobs[k].data for k in net.inputs})
    arrays.update({f"output/{k}": net.blobs[k].data for k in net.outputs})
    spec = dict(layers=layer_specs(proto), inputs=list(net.inputs), outputs=list(net.outputs),
                params={layer: len(blobs) for layer, blobs in net.params.items()})
    tmp = os.path.join(out_dir, f".{name}.part")
    with open(tmp + ".json", "w") as f:
        json.dump(spec, f)
    np.savez(tmp + ".npz", **arrays)
    os.replace(tmp + ".npz", os.path.join(out_dir, f"{name}.npz"))
    os.replace(tmp + ".json", os.path.join(out_dir, f"{name}.json"))


# ---- the torch side: no caffe, no protobuf --------------------------------------
def load_plain(out_dir, name, device="cpu"):
    """(TorchNet, inputs, Caffe's outputs) from what export_plain wrote."""
    import json
    with open(os.path.join(out_dir, f"{name}.json")) as f:
        spec = json.load(f)
    with np.load(os.path.join(out_dir, f"{name}.npz")) as z:
        params = {layer: [z[f"param/{layer}/{i}"] for i in range(n)]
                  for layer, n in spec["params"].items()}
        inputs = {k: z[f"input/{k}"] for k in spec["inputs"]}
        outputs = {k: z[f"output/{k}"] for k in spec["outputs"]}
    return TorchNet(spec["layers"], params, device), inputs, outputs


class TorchNet:
    """Plain layer specs (`layer_specs`) evaluated with torch ops and given weights."""

    def __init__(self, layers, params, device="cpu"):
        import torch
        self.torch, self.device = torch, device
        self.layers = layers
        self.params = {name: [torch.from_numpy(np.array(b, np.float32)).to(device) for b in blobs]
                       for name, blobs in params.items()}

    @classmethod
    def from_caffe(cls, proto, net, device="cpu"):
        return cls(layer_specs(proto), {name: [b.data.copy() for b in blobs]
                                        for name, blobs in net.params.items()}, device)

    def to_device(self, inputs):
        """{blob name: ndarray} -> {blob name: tensor on this net's device}."""
        return {k: self.torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(self.device)
                for k, v in inputs.items()}

    def __call__(self, inputs, grad=False):
        """inputs: {blob name: ndarray or tensor}; returns every blob as a torch
        tensor. `grad`: record the graph for a backward (see `learn`)."""
        blobs = {k: v if isinstance(v, self.torch.Tensor) else self.to_device({k: v})[k]
                 for k, v in inputs.items()}
        with self.torch.inference_mode(not grad):
            for layer in self.layers:
                if layer["type"] == "Input":
                    continue
                bottoms = [blobs[b] for b in layer["bottom"]]
                tops = self.run(layer, bottoms, self.params.get(layer["name"], []))
                for name, value in zip(layer["top"], tops if isinstance(tops, list) else [tops]):
                    blobs[name] = value
        return blobs

    def learn(self, proto):
        """Make the param blobs that learn in Caffe require gradients: lr_mult
        != 0, as Caffe's param_propagate_down decides (no ParamSpec: learns)."""
        specs = {l.name: l.param for l in proto.layer}
        for name, blobs in self.params.items():
            for i, b in enumerate(blobs):
                b.requires_grad_(i >= len(specs[name]) or specs[name][i].lr_mult != 0)

    def train_step(self, inputs, loss="loss"):
        """Training's step without the update: forward to the loss blob, then
        backward into the learning params (none into the data). Returns the loss."""
        for blobs in self.params.values():
            for b in blobs:
                b.grad = None
        value = self(inputs, grad=True)[loss]
        value.backward()
        return float(value.detach())

    def run(self, layer, x, w):
        import torch.nn.functional as F
        t, a = layer["type"], layer["args"]
        if t == "Convolution":
            return F.conv2d(x[0], w[0], w[1] if len(w) > 1 else None, **a)
        if t == "Deconvolution":
            return F.conv_transpose2d(x[0], w[0], w[1] if len(w) > 1 else None, **a)
        if t == "ReLU":
            return F.leaky_relu(x[0], a["negative_slope"]) if a["negative_slope"] else F.relu(x[0])
        if t == "Pooling":
            return self.pool(a, x[0])
        if t == "Dropout":
            return x[0]                                  # identity at test time (Caffe scales in training)
        if t == "Crop":
            return self.crop(a, x[0], x[1])
        if t == "Eltwise":
            return self.eltwise(a, x)
        if t == "Scale":
            return self.scale(a, x, w)
        if t == "LRN":
            if not a["across_channels"]:
                raise NotImplementedError("LRN WITHIN_CHANNEL")
            return F.local_response_norm(x[0], a["local_size"], a["alpha"], a["beta"], a["k"])
        if t == "Concat":
            return self.torch.cat(x, a["axis"])
        if t == "Softmax":
            return F.softmax(x[0], a["axis"])
        if t == "SoftmaxWithLoss":
            return self.softmax_loss(a, x[0], x[1])
        raise NotImplementedError(f"layer {layer['name']}: type {t} has no torch equivalent here")

    @staticmethod
    def pool(a, x):
        import torch.nn.functional as F
        if a["global_pooling"]:
            k, s, pad = (x.shape[2], x.shape[3]), (1, 1), (0, 0)
        else:
            k, s, pad = a["kernel"], a["stride"], a["padding"]
        if a["method"] == "max":
            return F.max_pool2d(x, k, s, pad, ceil_mode=True)
        if a["method"] == "ave":                         # Caffe counts the padding in the divisor
            return F.avg_pool2d(x, k, s, pad, ceil_mode=True, count_include_pad=True)
        raise NotImplementedError("stochastic pooling")

    @staticmethod
    def softmax_loss(a, score, label):
        import torch.nn.functional as F
        label = label[:, 0].long()
        ignore = a["ignore_label"]
        total = F.cross_entropy(score, label, ignore_index=-100 if ignore is None else ignore,
                                reduction="sum")
        norm = a["normalization"]
        if norm == "valid":
            count = label.numel() if ignore is None else int((label != ignore).sum())
        else:
            count = {"full": label.numel(), "batch_size": label.shape[0], "none": 1}[norm]
        return total / max(count, 1)

    @staticmethod
    def crop(a, x, like):
        axis = a["axis"] % x.dim()
        offsets = a["offset"] or [0]
        index = [slice(None)] * x.dim()
        for i, ax in enumerate(range(axis, x.dim())):
            off = offsets[i] if len(offsets) > 1 else offsets[0]
            index[ax] = slice(off, off + like.shape[ax])
        return x[tuple(index)]

    def eltwise(self, a, x):
        if a["operation"] == "prod":
            out = x[0]
            for y in x[1:]:
                out = out * y
            return out
        if a["operation"] == "max":
            return self.torch.stack(x).amax(0)
        coeff = a["coeff"] or [1.0] * len(x)
        return sum(c * y for c, y in zip(coeff, x))

    @staticmethod
    def scale(a, x, w):
        factor = x[1] if len(x) > 1 else w[0]
        axis = a["axis"] % x[0].dim()
        shape = [1] * axis + list(factor.shape) + [1] * (x[0].dim() - axis - factor.dim())
        out = x[0] * factor.reshape(shape)
        if a["bias_term"]:
            out = out + w[-1].reshape(shape)
        return out


def caffe_net(model, size, seed=0, loss=False):
    """A randomly filled caffe.Net of `model` with filled inputs, and its NetParameter."""
    proto = common.deploy_proto(model, common.parse_size(size), loss=loss)
    net = common.load_net(proto)
    common.fill_random(net, seed)
    common.fill_inputs(net, seed)
    return proto, net


def caffe_and_torch(model, size, seed=0, loss=False):
    """A randomly filled caffe.Net, its TorchNet twin and the shared inputs."""
    proto, net = caffe_net(model, size, seed, loss)
    inputs = {k: net.blobs[k].data.copy() for k in net.inputs}
    return net, TorchNet.from_caffe(proto, net), inputs


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


def time_torch(model, size, runs, threads, mode="fwd"):
    """Torch forward (mode fwd) or forward+backward as bench.fcn_speed's
    fwdbwd (training's loss, weight gradients where Caffe learns, none for
    the data) of the model in this process (call it in a child)."""
    import torch
    torch.set_num_threads(threads)
    backward = mode == "fwdbwd"
    proto, net = caffe_net(model, size, loss=backward)
    tnet = TorchNet.from_caffe(proto, net)
    inputs = {k: net.blobs[k].data.copy() for k in net.inputs}
    del net
    if backward:
        tnet.learn(proto)
    common.reset_peak_rss()     # the Caffe net that lent its weights is gone: count torch alone
    t = common.timeit((lambda: tnet.train_step(inputs)) if backward else (lambda: tnet(inputs)), runs)
    return dict(model=model, size=size, mode=mode, torch=torch.__version__, threads=threads,
                peak_rss_mb=common.peak_rss_mb(), **t)


def time_plain(out_dir, name, runs, device="cuda", benchmark=False):
    """In the torch interpreter: the forward of an exported net (export_plain)
    on `device`, fp32 with TF32 off, cudnn.benchmark as given; the inputs are
    on the device before timing and each timed call ends with a synchronize.
    Also the max relative difference to Caffe's exported outputs."""
    import torch
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        return dict(needs_gpu=f"torch {torch.__version__}: torch.cuda.is_available() is false")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = bool(benchmark)
    tnet, inputs, ref = load_plain(out_dir, name, device)
    x = tnet.to_device(inputs)

    def step():
        tnet(x)
        if cuda:
            torch.cuda.synchronize()
    t = common.timeit(step, runs, warmup=2)
    got = tnet(x)
    rel = max(float(np.abs(got[k].float().cpu().numpy() - r).max()) / max(float(np.abs(r).max()), 1e-30)
              for k, r in ref.items())
    return dict(torch=torch.__version__, device=device, tf32=False, cudnn_benchmark=bool(benchmark),
                device_name=torch.cuda.get_device_name() if cuda else "cpu",
                max_rel_diff_vs_caffe=rel, **t)


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
    p.add_argument("--plain", action="store_true",
                   help="time an exported net: DIR NAME RUNS DEVICE BENCHMARK(0/1); needs only "
                        "torch and numpy (the interpreter bench.gpu_check's --torch-python names)")
    args = p.parse_args(argv)
    if args.plain:
        out_dir, name, runs, device, benchmark = args.config
        common.emit(time_plain(out_dir, name, int(runs), device, benchmark == "1"))
        return
    if args.child:
        model, size, runs, threads, *mode = args.config
        common.emit(time_torch(model, size, int(runs), int(threads), *mode))
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
