"""FCN forward and forward+backward speed through pycaffe, one child per configuration.

    python -m bench.fcn_speed                        # the default plan (what `make bench` runs)
    python -m bench.fcn_speed --quick                # a smoke run, ~1 minute
    python -m bench.fcn_speed --models voc-fcn8s --sizes 500x500 --modes fwd,fwdbwd --runs 5
    python -m bench.fcn_speed --gpu 0                # the same table on GPU 0

Times are the median of --runs calls after one warm-up (ms per image, batch
1; on a GPU each call is Caffe's ForwardFromTo/BackwardFromTo and a device
synchronize, no copy back to the host); GFLOP/s counts the net's own convolutions (bench.flops); memory is the
child's VmHWM, so every configuration's peak is its own; on a GPU also the
device memory in use while the net is alive (cudaMemGetInfo in the child:
all of the device's, and the net's own above what the child held before). fwdbwd is training's
step without the update: forward to SoftmaxWithLoss, then backward with
the weight gradients of learnable layers and no gradient for the data.
"""
import argparse
import os

from . import common, engine, flops

MODELS = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn-alexnet", "voc-fcn-googlenet")
SIZES = ("500x500", "375x500", "256x256", "1000x1000")
FWDBWD_SIZES = ("500x500",)
LARGE = 1_000_000          # pixels above which a configuration gets --runs-large runs
FCN8S_FACT_GMAC = 181.0    # fcn-facts.md: FCN-8s VGG16 forward, 500x500 + pad 100
SHORT = {"voc-fcn32s": "FCN-32s", "voc-fcn16s": "FCN-16s", "voc-fcn8s": "FCN-8s",
         "voc-fcn-alexnet": "FCN-AlexNet", "voc-fcn-googlenet": "FCN-GoogLeNet"}


def measure(model, size, mode, runs, gpu=None, seed=0, after=None):
    """Time one configuration in this process (call it in a child);
    `after(proto, net)` runs last, the net still alive."""
    import caffe  # noqa: F401  (imported before set_mode for a clear import error)
    common.set_mode(gpu)
    before_mb = common.gpu_memory_used_mb() if gpu is not None else None
    proto = common.deploy_proto(model, common.parse_size(size), loss=mode == "fwdbwd")
    net = common.load_net(proto)
    common.fill_random(net, seed)
    common.fill_inputs(net, seed)
    macs = flops.forward_macs(net)
    if mode == "fwdbwd":
        macs += flops.backward_macs(net, proto)
    t = common.timeit(common.pass_fn(net, gpu, backward=mode == "fwdbwd"), runs)
    try:
        blas = common.blas_variant(common.caffe_blas()["realpath"])
    except (OSError, RuntimeError):      # no ldd, or a BLAS under another name (a kit)
        blas = None
    row = dict(model=model, size=size, mode=mode, device="cpu" if gpu is None else f"gpu{gpu}",
               caffe=os.path.dirname(caffe.__file__), libcaffe=common.loaded_libcaffe(),
               gmac=macs / 1e9, gflops=flops.gflop(macs) / (t["ms"] / 1e3),
               peak_rss_mb=common.peak_rss_mb(), blas=blas,
               **(engine.current() if gpu is None else {}), **t)
    if gpu is not None:
        # while the net is alive: its blobs, parameters, gradients and cuDNN
        # workspaces (Caffe frees none of them between passes)
        during_mb = common.gpu_memory_used_mb()
        row.update(gpu_used_mb=during_mb, gpu_net_mb=(during_mb - before_mb
                                                      if None not in (during_mb, before_mb) else None))
    if after:
        after(proto, net)
    return row


def plan(models, sizes, modes, fwdbwd_sizes, runs, runs_large):
    """[(model, size, mode, runs)]: forward at every size, fwdbwd where asked."""
    out = []
    for model in models:
        for mode in modes:
            for size in sizes if mode == "fwd" else fwdbwd_sizes:
                h, w = common.parse_size(size)
                heavy = h * w >= LARGE or mode == "fwdbwd"
                out.append((model, size, mode, runs_large if heavy else runs))
    return out


def run(configs, threads=None, gpu=None, env=None, log=print):
    """Measure every configuration in its own child; returns the result rows."""
    env = dict(env or {}, **common.thread_env(threads or common.N_CORES))
    rows = []
    for model, size, mode, runs in configs:
        args = [model, size, mode, runs] + ([] if gpu is None else ["--gpu", gpu])
        r = common.run_child("fcn_speed", args, env=env)
        r.update(model=model, size=size, mode=mode, threads=threads or common.N_CORES)
        log(f"  {model} {size} {mode}: " + (r["error"] if "error" in r else
                                           f"{r['ms']:.0f} ms, {r['gflops']:.1f} GFLOP/s"))
        rows.append(r)
    return rows


def add_peak_fraction(rows, peak_gflops):
    for r in rows:
        if peak_gflops and "gflops" in r:
            r["frac_peak"] = r["gflops"] / peak_gflops


def check_gmac(rows):
    """The FCN-8s / 500x500 forward count against the paper's 181 GMAC."""
    for r in rows:
        if r.get("model") == "voc-fcn8s" and r.get("size") == "500x500" and r.get("mode") == "fwd" \
                and "gmac" in r:
            dev = r["gmac"] / FCN8S_FACT_GMAC - 1
            return dict(gmac=r["gmac"], fact=FCN8S_FACT_GMAC, deviation=dev, ok=abs(dev) < 0.02)
    return None


COLUMNS = [("name", "model", None), ("size", "input", None), ("mode", "pass", None),
           ("ms", "ms / image", "{:.0f}"), ("gmac", "GMAC", "{:.1f}"),
           ("gflops", "GFLOP/s", "{:.1f}"), ("frac_peak", "of peak", "{:.0%}"),
           ("peak_rss_mb", "peak RSS MiB", "{:.0f}"), ("runs", "runs", None)]


def table(rows):
    shown = []
    for r in rows:
        r = dict(r, name=SHORT.get(r["model"], r["model"]))
        if "error" in r:
            r["mode"] = f"{r['mode']} (failed: {r['error'][:100]})"
        shown.append(r)
    return common.markdown(shown, COLUMNS)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("config", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--sizes", default=",".join(SIZES), help="HxW list for forward")
    p.add_argument("--modes", default="fwd,fwdbwd")
    p.add_argument("--fwdbwd-sizes", default=",".join(FWDBWD_SIZES))
    p.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--runs-large", type=int, default=1,
                   help="runs for >= 1000x1000 and for forward+backward")
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (default: all cores)")
    p.add_argument("--quick", action="store_true", help="FCN-8s and FCN-AlexNet at 256x256, 1 run")
    p.add_argument("--gpu", type=int, default=None, help="GPU id (Caffe GPU mode)")
    p.add_argument("--peak", type=float, default=None,
                   help="GFLOP/s to compare with (default: measure with bench.peak)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.sizes, args.fwdbwd_sizes = "voc-fcn8s,voc-fcn-alexnet", "256x256", "256x256"
        args.runs = args.runs_large = 1
    return args


def configs_from(args):
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    return plan(split(args.models), split(args.sizes), split(args.modes),
                split(args.fwdbwd_sizes), args.runs, args.runs_large)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        model, size, mode, runs = args.config
        common.emit(measure(model, size, mode, int(runs), args.gpu))
        return
    from . import peak
    peak_gflops = args.peak or peak.reference(args.threads, args.gpu)
    rows = run(configs_from(args), args.threads, args.gpu)
    add_peak_fraction(rows, peak_gflops)
    print(table(rows))
    print(f"\npeak (sgemm, same BLAS, same threads): " +
          (f"{peak_gflops:.1f} GFLOP/s" if peak_gflops else "not measured"))
    check = check_gmac(rows)
    if check:
        print(f"FCN-8s 500x500 forward: {check['gmac']:.1f} GMAC counted vs {check['fact']:.0f} "
              f"GMAC in the paper ({check['deviation']:+.1%}: {'OK' if check['ok'] else 'MISMATCH'})")


if __name__ == "__main__":
    main()
