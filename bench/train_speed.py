"""The main job's own path, timed: SGD iterations of full-width voc-fcn8s
(stand-in init: seeded He-normal weights, bilinear upsampling) on a
generated VOC-layout fixture of 500x375 images, through the real VOC data
layer and its loader processes, as `solvers.solve` trains.

    python -m bench.train_speed --gpu 0              # 20 iterations after 2 warm-up ones
    python -m bench.train_speed --width 1/16 --iters 3 --size 120x160     # a CPU smoke run

Per iteration: wall time of solver.step(1) (the GPU synchronized at the end
of the timed stretch); data wait: the time spent inside the data layer's
forward (waiting for the loader's next example and copying it into the
tops), as a share of the timed stretch. A time budget (--budget) stops the
loop early; the result says how many iterations ran.
"""
import argparse
import os
import tempfile
import time

from common.cli import parse_width

from . import common
from .fixtures import H, W, voc_fixture

MODEL = "voc-fcn8s"
WARMUP = 2
NEVER = 10 ** 9


def fixture_dataset(root, images, size, n_classes=21):
    """A VOC-layout dataset under `root`: `images` training images, 2 val."""
    from net_specs.datasets import VOC_MEAN, Dataset, Head, Source
    voc_fixture(root, [f"t{k:03d}" for k in range(images)], "train", size, n_classes, seed=1)
    voc_fixture(root, ["v000", "v001"], "val", size, n_classes, seed=2)
    voc = "layers.voc.VOCSegDataLayer"
    return Dataset("voc-fixture", "generated VOC-layout fixture", VOC_MEAN,
                   (Head("label", n_classes),), train=Source(voc, root, "train"),
                   val=Source(voc, root, "val"))


def timed_data_layer(run):
    """Wrap the train net's data layer forward (Caffe looks it up on the
    instance); returns the list each call appends its seconds to."""
    from solvers.training.run import data_layer
    layer = data_layer(run.solver.net)
    inner, waits = layer.forward, []

    def forward(bottom, top):
        t = time.perf_counter()
        inner(bottom, top)
        waits.append(time.perf_counter() - t)
    layer.forward = forward
    return waits


def measure(gpu, iters, width=1.0, images=24, size=(H, W), budget_s=60.0):
    """Train `iters` timed iterations in this process (call it in a child)."""
    import caffe  # noqa: F401  (a clear import error before set_mode)
    from net_specs import NetConfig
    from solvers.training.run import Run, data_layer
    started = time.monotonic()
    common.set_mode(gpu)
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        dataset = fixture_dataset(os.path.join(tmp, "VOC"), images, size)
        net = NetConfig.of(MODEL, dataset=dataset, width=width)
        run = Run.open(net, out_dir=os.path.join(tmp, "run"), snapshot_every=NEVER)
        run.commit()
        common.fill_random(run.solver.net)
        waits = timed_data_layer(run)
        setup_s = time.monotonic() - started
        run.solver.step(WARMUP)
        common.synchronize(gpu)
        del waits[:]
        done, t0 = 0, time.perf_counter()
        while done < iters and time.monotonic() - started < budget_s:
            run.solver.step(1)
            done += 1
        common.synchronize(gpu)
        total = time.perf_counter() - t0
        row = dict(model=MODEL, device="cpu" if gpu is None else f"gpu{gpu}", width=width,
                   image=f"{size[0]}x{size[1]}", images=images, iters=done, asked=iters,
                   warmup=WARMUP, cut_short=done < iters, setup_s=setup_s,
                   loss=run.loss(), workers=run.net.workers)
        if done:
            row.update(ms_per_iter=1e3 * total / done, data_wait_share=sum(waits) / total,
                       data_wait_ms=1e3 * sum(waits) / done)
        if gpu is not None:
            row["gpu_used_mb"] = common.gpu_memory_used_mb()
        for net in (run.solver.net, run.solver.test_nets[0]):
            data_layer(net).close_stream()
        return row


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("config", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--gpu", type=int, default=None, help="GPU id (default: the CPU)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--width", type=parse_width, default=1.0)
    p.add_argument("--images", type=int, default=24, help="training images in the fixture")
    p.add_argument("--size", default=f"{H}x{W}", help="fixture image HxW (default 375x500)")
    p.add_argument("--budget", type=float, default=600.0, help="seconds before the loop stops")
    args = p.parse_args(argv)
    if args.child:
        gpu, iters, width, images, size, budget = args.config
        common.emit(measure(None if gpu == "cpu" else int(gpu), int(iters), float(width),
                            int(images), common.parse_size(size), float(budget)))
        return 0
    row = measure(args.gpu, args.iters, args.width, args.images, common.parse_size(args.size),
                  args.budget)
    print(common.markdown([row], COLUMNS))
    return 0


COLUMNS = [("model", "model", None), ("device", "device", None), ("width", "width", "{:g}"),
           ("image", "images", None), ("iters", "timed iterations", None),
           ("ms_per_iter", "ms / iteration", "{:.1f}"), ("data_wait_share", "data wait", "{:.2%}"),
           ("data_wait_ms", "data wait ms / iteration", "{:.2f}"), ("loss", "loss", "{:.4g}")]


if __name__ == "__main__":
    import sys
    sys.exit(main())
