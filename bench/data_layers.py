"""Data layer throughput and how long the solver waits on data, prefetch off / on.

    python -m bench.data_layers [--images 16] [--iters 32] [--compute-ms 100]

On a synthetic VOC-sized dataset (500x375 JPEG + palette PNG, written to a
temporary directory) it prints:

1. images/s of the VOC layer in a data-only Caffe net, prefetch off and on;
2. per iteration, the ms a consumer waits in the data net's forward when
   each iteration also computes for ~compute-ms, simulated two ways:
   `sleep` (the GIL is free: the ideal case for a thread) and `caffe` (one
   forward of a conv net, which like solver.step holds the GIL throughout).

Figures only: nothing is asserted about time.
"""
import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import caffe  # noqa: E402
from caffe import layers as L  # noqa: E402

from data.layouts import write_voc  # noqa: E402
from net_specs.datasets import VOC_MEAN  # noqa: E402

H, W = 375, 500


def natural_images(root, ids):
    """Overwrite the fixture's noise JPEGs with smooth ones: noise compresses
    badly and decodes slower than photographs, which would flatter prefetch."""
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    for k, i in enumerate(ids):
        rng = np.random.RandomState(k)
        f = rng.uniform(0.005, 0.05, 6)
        rgb = np.stack([127 + 100 * np.sin(f[c] * xx + f[c + 3] * yy + k) for c in range(3)], -1)
        rgb += rng.normal(0, 6, rgb.shape)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(
            os.path.join(root, "JPEGImages", i + ".jpg"), quality=90)


def data_net(tmp, root, prefetch):
    n = caffe.NetSpec()
    params = dict(root=root, split="train", mean=list(VOC_MEAN), n_classes=21, randomize=True,
                  seed=1337, prefetch=prefetch)
    n.data, n.label = L.Python(module="layers.voc", layer="VOCSegDataLayer", ntop=2,
                               param_str=json.dumps(params))
    path = os.path.join(tmp, f"data-{prefetch}.prototxt")
    with open(path, "w") as f:
        f.write(str(n.to_proto()))
    return caffe.Net(path, caffe.TRAIN)


def conv_net(tmp, layers):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, H, W]))
    top = n.data
    for k in range(layers):
        top = L.Convolution(top, num_output=16, kernel_size=3, pad=1, weight_filler=dict(type="gaussian"))
        setattr(n, f"conv{k}", top)
    path = os.path.join(tmp, f"conv{layers}.prototxt")
    with open(path, "w") as f:
        f.write(str(n.to_proto()))
    return caffe.Net(path, caffe.TEST)


def forward_ms(net, runs=3):
    net.forward()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        net.forward()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def calibrated_conv_net(tmp, target_ms):
    """A conv net whose one forward takes about target_ms (holding the GIL)."""
    one, two = forward_ms(conv_net(tmp, 1)), forward_ms(conv_net(tmp, 2))
    per_layer = max(two - one, 0.1)
    layers = max(1, round(1 + (target_ms - one) / per_layer))
    net = conv_net(tmp, layers)
    return net, layers, forward_ms(net)


def throughput(net, iters):
    net.forward()
    t0 = time.perf_counter()
    for _ in range(iters):
        net.forward()
    return iters / (time.perf_counter() - t0)


def waits(net, iters, compute):
    """Median / mean ms spent in the data net's forward per iteration."""
    net.forward()
    compute()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        net.forward()
        out.append(1e3 * (time.perf_counter() - t0))
        compute()
    return statistics.median(out), statistics.fmean(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.data_layers", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--iters", type=int, default=32)
    parser.add_argument("--compute-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    caffe.set_mode_cpu()
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        ids = [f"im{k:03d}" for k in range(args.images)]
        root = write_voc(os.path.join(tmp, "VOC"), [(i, (H, W)) for i in ids])
        natural_images(root, ids)
        kb = np.mean([os.path.getsize(os.path.join(root, "JPEGImages", i + ".jpg")) for i in ids]) / 1024
        print(f"data layers: {args.images} VOC-sized images ({W}x{H} JPEG, ~{kb:.0f} KB), "
              f"{len(os.sched_getaffinity(0))} cores")
        nets = {p: data_net(tmp, root, p) for p in (False, True)}
        for p, net in nets.items():
            print(f"  throughput, prefetch {'on ' if p else 'off'}: {throughput(net, args.iters):7.1f} images/s")

        cnet, layers, cms = calibrated_conv_net(tmp, args.compute_ms)
        computes = {"sleep": lambda: time.sleep(args.compute_ms / 1e3), "caffe": cnet.forward}
        print(f"  wait on data per iteration with ~{args.compute_ms:.0f} ms of compute "
              f"(caffe: {layers} conv layers, {cms:.0f} ms/forward):")
        for name, compute in computes.items():
            for p, net in nets.items():
                med, mean = waits(net, args.iters, compute)
                print(f"    compute={name:5s} prefetch {'on ' if p else 'off'}: "
                      f"median {med:6.1f} ms, mean {mean:6.1f} ms")


if __name__ == "__main__":
    main()
