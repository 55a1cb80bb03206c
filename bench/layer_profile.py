"""Where an FCN's CPU time goes: per-layer forward times through pycaffe.

    python -m bench.layer_profile                          # FCN-8s 500x500, all cores
    python -m bench.layer_profile --models voc-fcn8s --size 500x500 --threads 1 --runs 3
    python -m bench.layer_profile --before /path/to/unpatched/site-cpu   # an unpatched build
    python -m bench.layer_profile --before reference       # CAFFE_CPU_REFERENCE=1
    python -m bench.layer_profile --engine im2col,onednn   # both engines of a oneDNN build
    python -m bench.layer_profile --engine onednn --caffe-python /path/to/.venv/bin/python

Each layer is timed alone (`net._forward(i, i)`, median of --runs passes
after a warm-up pass) in a child process with its own thread environment;
`--before` profiles the unpatched Caffe instead, as bench.before_after does
(a directory holding an unpatched `caffe` package, or `reference`: this build
running its CPU layers as unpatched BVLC Caffe does, docker/patches/0007+);
`--engine` selects the convolution engine of a patched build (im2col:
CAFFE_CPU_CONV=im2col; onednn: the default of a build linking libdnnl), one
profile per engine listed, each saying which engine its child really ran
(bench.engine). `--caffe-python` profiles another interpreter's caffe.
Convolutions report GFLOP/s (bench.flops); the table groups the rest by type.
"""
import statistics
import time

from . import common, engine, flops

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
                peak_rss_mb=common.peak_rss_mb(), **engine.current())


def run(model=MODELS[0], size=SIZE, runs=3, threads=None, before=None, engine_name=None,
        python=None):
    """Profile in a child: this build (with `engine_name`: that convolution
    engine), or with `before` the unpatched one; `python`: another interpreter."""
    from .before_after import before_env
    selected = before_env(before) if before else (
        engine.env_for(engine_name) if engine_name else {"CAFFE_CPU_REFERENCE": "0"})
    env = dict(common.thread_env(threads or common.N_CORES), **selected)
    r = common.run_child("layer_profile", [model, size, runs], env=env, python=python)
    r.update(model=model, size=size, threads=threads or common.N_CORES, before=before)
    return r


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
        g["gflops"] = flops.rate(g["gmac"], g["ms"])
    return rows


def top_layers(result, n=12):
    rows = sorted(result["layers"], key=lambda l: -l["ms"])[:n]
    return [dict(l, share=l["ms"] / result["total_ms"], gflops=flops.rate(l["gmac"], l["ms"])) for l in rows]


TYPE_COLUMNS = [("type", "layer type", None), ("layers", "layers", None), ("ms", "ms", "{:.0f}"),
                ("share", "share", "{:.1%}"), ("gflops", "GFLOP/s", "{:.1f}")]
LAYER_COLUMNS = [("name", "layer", None), ("type", "type", None), ("ms", "ms", "{:.1f}"),
                 ("share", "share", "{:.1%}"), ("gflops", "GFLOP/s", "{:.1f}")]


def report(result):
    if "error" in result:
        return f"{result['model']} {result['size']}: failed: {result['error']}"
    build = f"unpatched ({result['before']})" if result["before"] else "patched"
    head = (f"{result['model']} {result['size']}, {result['threads']} thread(s), "
            f"{build}, convolution engine {result.get('engine')}: "
            f"{result['total_ms']:.0f} ms summed over layers, peak RSS {result['peak_rss_mb']:.0f} MiB")
    return "\n\n".join([head, common.markdown(by_type(result), TYPE_COLUMNS),
                        common.markdown(top_layers(result), LAYER_COLUMNS)])


def main(argv=None):
    p = common.model_parser(__doc__, MODELS, SIZE)
    p.add_argument("--before", default=None,
                   help="profile the unpatched Caffe: a directory holding its caffe package, or 'reference'")
    p.add_argument("--engine", default=None,
                   help="comma list of convolution engines to profile: im2col, onednn")
    p.add_argument("--caffe-python", default=None, help="interpreter whose caffe to profile")
    args = p.parse_args(argv)
    if args.child:
        model, size, runs = args.config
        common.emit(measure(model, size, int(runs)))
        return
    engines = [e for e in (args.engine or "").split(",") if e]
    bad = [e for e in engines if e not in engine.ENGINES]
    if bad or (engines and args.before):
        p.error(f"--engine {args.engine}: expected a list of {', '.join(engine.ENGINES)} "
                "(and no --before with it)")
    if "onednn" in engines:
        found = engine.probe(args.caffe_python)
        if found.get("engine") != "onednn":
            p.error("--engine onednn: " + (found.get("error") or
                    f"this build's caffe ({found.get('caffe')}) links no libdnnl"))
    for model in args.models.split(","):
        for name in engines or [None]:
            print(report(run(model, args.size, args.runs, args.threads, args.before, name,
                             args.caffe_python)) + "\n")


if __name__ == "__main__":
    main()
