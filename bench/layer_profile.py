"""Where an FCN's CPU time goes: per-layer forward times through pycaffe.

    python -m bench.layer_profile                          # FCN-8s 500x500, all cores
    python -m bench.layer_profile --models voc-fcn8s --size 500x500 --threads 1 --runs 3
    python -m bench.layer_profile --before /path/to/unpatched/site-cpu   # an unpatched build
    python -m bench.layer_profile --before reference       # CAFFE_CPU_REFERENCE=1

Each layer is timed alone (`net._forward(i, i)`, median of --runs passes
after a warm-up pass) in a child process with its own thread environment;
`--before` profiles the unpatched Caffe instead, as bench.before_after does
(a directory holding an unpatched `caffe` package, or `reference`: this build
running its CPU layers as unpatched BVLC Caffe does, docker/patches/0007+).
Convolutions report GFLOP/s (bench.flops); the table groups the rest by type.
"""
import statistics
import time

from . import common, flops

MODELS = ("voc-fcn8s",)
SIZE = "500x500"


def measure(model, size, runs):
    """{layers: [{name, type, ms, gmac}], total_ms, peak_rss_mb} (call in a child)."""
    import caffe  # noqa: F401
    common.set_mode(None)
    net = common.load_net(common.deploy_proto(model, common.parse_size(size)))
    common.fill_random(net)
    common.fill_inputs(net)
    macs = {name: m for name, _, m in flops.layer_macs(net)}
    names, types = list(net._layer_names), [l.type for l in net.layers]
    net.forward()                                        # warm-up: allocations, page faults
    times = [[] for _ in names]
    for _ in range(max(1, runs)):
        for i in range(len(names)):
            t0 = time.perf_counter()
            net._forward(i, i)
            times[i].append((time.perf_counter() - t0) * 1e3)
    layers = [dict(name=n, type=t, ms=statistics.median(ts), gmac=macs.get(n, 0) / 1e9)
              for n, t, ts in zip(names, types, times)]
    return dict(layers=layers, total_ms=sum(l["ms"] for l in layers),
                peak_rss_mb=common.peak_rss_mb())


def run(model=MODELS[0], size=SIZE, runs=3, threads=None, before=None):
    """Profile in a child: this build, or with `before` the unpatched one."""
    from .before_after import before_env
    env = dict(common.thread_env(threads or common.N_CORES),
               **(before_env(before) if before else {"CAFFE_CPU_REFERENCE": "0"}))
    r = common.run_child("layer_profile", [model, size, runs], env=env)
    r.update(model=model, size=size, threads=threads or common.N_CORES, before=before)
    return r


def gflops(gmac, ms):
    """GFLOP/s of `gmac` multiply-adds in `ms`; None for layers without any."""
    return flops.gflop(gmac * 1e9) / (ms / 1e3) if gmac else None


def by_type(result):
    """Rows per layer type: ms, share of the forward, GFLOP/s for convolutions."""
    groups = {}
    for l in result["layers"]:
        g = groups.setdefault(l["type"], dict(type=l["type"], ms=0.0, gmac=0.0, layers=0))
        g["ms"] += l["ms"]
        g["gmac"] += l["gmac"]
        g["layers"] += 1
    rows = sorted(groups.values(), key=lambda g: -g["ms"])
    for g in rows:
        g["share"] = g["ms"] / result["total_ms"]
        g["gflops"] = gflops(g["gmac"], g["ms"])
    return rows


def top_layers(result, n=12):
    rows = sorted(result["layers"], key=lambda l: -l["ms"])[:n]
    return [dict(l, share=l["ms"] / result["total_ms"], gflops=gflops(l["gmac"], l["ms"])) for l in rows]


TYPE_COLUMNS = [("type", "layer type", None), ("layers", "layers", None), ("ms", "ms", "{:.0f}"),
                ("share", "share", "{:.1%}"), ("gflops", "GFLOP/s", "{:.1f}")]
LAYER_COLUMNS = [("name", "layer", None), ("type", "type", None), ("ms", "ms", "{:.1f}"),
                 ("share", "share", "{:.1%}"), ("gflops", "GFLOP/s", "{:.1f}")]


def report(result):
    if "error" in result:
        return f"{result['model']} {result['size']}: failed: {result['error']}"
    head = (f"{result['model']} {result['size']}, {result['threads']} thread(s), "
            f"{'unpatched (' + result['before'] + ')' if result['before'] else 'patched'}: "
            f"{result['total_ms']:.0f} ms summed over layers, peak RSS {result['peak_rss_mb']:.0f} MiB")
    return "\n\n".join([head, common.markdown(by_type(result), TYPE_COLUMNS),
                        common.markdown(top_layers(result), LAYER_COLUMNS)])


def main(argv=None):
    p = common.model_parser(__doc__, MODELS, SIZE)
    p.add_argument("--before", default=None,
                   help="profile the unpatched Caffe: a directory holding its caffe package, or 'reference'")
    args = p.parse_args(argv)
    if args.child:
        model, size, runs = args.config
        common.emit(measure(model, size, int(runs)))
        return
    for model in args.models.split(","):
        print(report(run(model, args.size, args.runs, args.threads, args.before)) + "\n")


if __name__ == "__main__":
    main()
