"""How long a solver waits for data at GPU-like step times: no prefetch, the
prefetch thread, the loader's worker processes.

    python -m bench.data_layers [--images 16] [--iters 40] [--steps 20,50,100]
                                [--datasets voc,sbd,nyud] [--computes gil,caffe]
                                [--loaders 1x2,1x4,2x2]

On full-size fixture datasets (500x375, written by data.layouts in each
dataset's on-disk layout, images made smooth like photographs) the real
VOC, SBD and NYUD (color + HHA + label) layers run in a data-only Caffe
net. Each iteration forwards it (the wait: loading if nothing is ready,
plus the copy into the blobs) and then "steps" for a fixed time while
holding the GIL, as pycaffe's solver.step does:

- `gil`: a C sleep called with the GIL held (ctypes.PyDLL), i.e. a GPU
  step: the Caffe thread blocks, the CPU is free;
- `caffe`: forwards of a conv net (1 BLAS thread) sized to take that long:
  the Caffe thread also keeps a core busy.

Printed per dataset, stream and step time: images/s and the share of the
iteration spent waiting for data, and the throughput of the data net alone.
The loader configurations are WORKERSxQUEUE_DEPTH. Figures only: nothing
is asserted about time. On a loaded machine the figures are pessimistic:
the load average is printed with them.
"""
import argparse
import ctypes
import json
import os
import statistics
import tempfile
import time

from common.caffe_log import quiet_caffe

quiet_caffe()
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # the step's compute: one core

import numpy as np  # noqa: E402

import caffe  # noqa: E402
from caffe import layers as L  # noqa: E402

from common.report import host_info, markdown  # noqa: E402
from common.seed import SEED  # noqa: E402
from bench.fixtures import H, W, smooth_image  # noqa: E402
from data.layouts import write_nyud, write_sbdd, write_voc  # noqa: E402
from net_specs.datasets import NYUD_COLOR_MEAN, VOC_MEAN  # noqa: E402
from netio.nets import net_from_param  # noqa: E402

WARMUP = 5              # iterations not timed: the loader's first examples and slot growth


# ---- fixture datasets ------------------------------------------------------------
def jpeg_dataset(write, image_dir, module, layer):
    """VOC or SBD: the layout's writer, then smooth JPEGs in place of its noise."""
    def make(root, ids):
        write(root, [(i, (H, W)) for i in ids])
        for k, i in enumerate(ids):
            smooth_image(k).save(os.path.join(root, image_dir, i + ".jpg"), quality=90)
        params = dict(root=root, split="train", mean=list(VOC_MEAN), n_classes=21)
        return module, layer, params, ["data", "label"]
    return make


def nyud_dataset(root, ids):
    write_nyud(root, [(i, (H, W)) for i in ids])
    for k, i in enumerate(ids):
        smooth_image(k).save(os.path.join(root, "data", "images", f"img_{i}.png"))
        smooth_image(k + 1000).save(os.path.join(root, "data", "hha", f"img_{i}.png"))
    tops = ["color", "hha", "label"]
    return "layers.nyud", "NYUDSegDataLayer", dict(root=root, split="trainval", tops=tops,
                                                   mean=list(NYUD_COLOR_MEAN), n_classes=40), tops


DATASETS = {"voc": jpeg_dataset(write_voc, "JPEGImages", "layers.voc", "VOCSegDataLayer"),
            "sbd": jpeg_dataset(write_sbdd, "img", "layers.sbdd", "SBDDSegDataLayer"),
            "nyud": nyud_dataset}


def data_net(dataset, stream):
    module, layer, params, tops = dataset
    params = dict(params, randomize=True, seed=SEED, **stream)
    n = caffe.NetSpec()
    outs = L.Python(module=module, layer=layer, ntop=len(tops), param_str=json.dumps(params))
    for name, top in zip(tops, outs):
        n[name] = top
    return net_from_param(n.to_proto(), caffe.TRAIN)


def streams(loaders):
    """{label: data-layer params} for no prefetch, the thread, each loader WxD."""
    out = {"none": dict(prefetch=False), "thread": dict(workers=0)}
    for spec in loaders:
        w, d = (int(x) for x in spec.lower().split("x"))
        out[f"loader {w}x{d}"] = dict(workers=w, queue_depth=d)
    return out


# ---- steps that hold the GIL -----------------------------------------------------
def gil_step(ms):
    """A C sleep with the GIL held (PyDLL keeps it): a GPU step as pycaffe runs it."""
    usleep = ctypes.PyDLL(None).usleep
    usleep.argtypes = [ctypes.c_uint]
    return lambda: usleep(int(ms * 1000))


def conv_net(side, layers=4):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 16, side, side]))
    top = n.data
    for k in range(layers):
        top = L.Convolution(top, num_output=16, kernel_size=3, pad=1, weight_filler=dict(type="gaussian"))
        setattr(n, f"conv{k}", top)
    return net_from_param(n.to_proto())


def forward_ms(net, runs=5):
    net.forward()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        net.forward()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def caffe_step(ms):
    """Forward of a conv net whose side is calibrated to take about `ms`."""
    side = 128
    for _ in range(3):
        took = forward_ms(conv_net(side))
        side = max(8, int(round(side * (ms / took) ** 0.5)))
    net = conv_net(side)
    return net.forward, forward_ms(net)


# ---- measurement -------------------------------------------------------------------
def throughput(net, iters):
    for _ in range(WARMUP):
        net.forward()
    t0 = time.perf_counter()
    for _ in range(iters):
        net.forward()
    return iters / (time.perf_counter() - t0)


def with_steps(net, iters, step):
    """images/s and the share of time waiting in the data net's forward."""
    for _ in range(WARMUP):
        net.forward()
        step()
    wait, t0 = 0.0, time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        net.forward()
        wait += time.perf_counter() - t
        step()
    total = time.perf_counter() - t0
    return iters / total, wait / total


def example_mb(net, tops):
    return sum(net.blobs[t].data.nbytes for t in tops) / 2 ** 20


def loadavg():
    return " ".join(f"{x:.2f}" for x in host_info()["loadavg"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.data_layers",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16, help="images per fixture dataset")
    parser.add_argument("--iters", type=int, default=40, help="timed iterations per figure")
    parser.add_argument("--steps", default="20,50,100", help="step times, ms")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--computes", default="gil,caffe", help="gil and/or caffe (see above)")
    parser.add_argument("--loaders", default="1x2,1x4,2x2", help="WORKERSxQUEUE_DEPTH, comma-separated")
    args = parser.parse_args(argv)
    steps = [float(s) for s in args.steps.split(",")]
    computes = args.computes.split(",")
    caffe.set_mode_cpu()
    info = host_info()
    print(f"data layers at GPU-like step times: {info['cpu']}, {info['cores']} cores, "
          f"{info['date']}, load average {loadavg()} at the start")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        step_fns = {}
        for kind in computes:
            for ms in steps:
                if kind == "gil":
                    step_fns[kind, ms] = gil_step(ms), ms
                else:
                    step_fns[kind, ms] = caffe_step(ms)
        print("steps: " + ", ".join(f"{k} {ms:.0f} ms (measured {took:.1f})"
                                    for (k, ms), (_, took) in step_fns.items()))
        rows = []
        for name in args.datasets.split(","):
            ids = [f"im{k:03d}" for k in range(args.images)]
            dataset = DATASETS[name](os.path.join(tmp, name), ids)
            for label, stream in streams(args.loaders.split(",")).items():
                net = data_net(dataset, stream)
                row = dict(dataset=name, stream=label, alone=throughput(net, args.iters),
                           mb=example_mb(net, dataset[3]))
                for kind in computes:
                    for ms in steps:
                        ips, share = with_steps(net, args.iters, step_fns[kind, ms][0])
                        row[f"{kind}{ms:g}"] = f"{ips:5.1f} img/s, {share:6.2%}"
                net.layers[0].close_stream()
                rows.append(row)
                print(f"  {name:5s} {label:11s} done (load average {loadavg()})", flush=True)
    columns = [("dataset", "dataset", None), ("stream", "stream", None),
               ("alone", "data net alone, img/s", "{:.1f}")]
    columns += [(f"{k}{ms:g}", f"{k} {ms:g} ms step: img/s, wait", None) for k in computes for ms in steps]
    print()
    print(markdown(rows, columns))
    sizes = ", ".join(f"{r['dataset']} {r['mb']:.1f} MB" for r in rows if r["stream"] == "none")
    print(f"\nexample size {sizes}; "
          f"{args.images} images per dataset, {args.iters} timed iterations per figure; "
          f"load average {loadavg()} at the end")


if __name__ == "__main__":
    main()
