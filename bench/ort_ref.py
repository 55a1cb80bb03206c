"""The same FCN through onnxruntime, on our own ONNX export, for a speed
reference: the runtime a CPU user would deploy an FCN on.

    python -m bench.ort_ref --models voc-fcn8s --size 500x500 --threads 2 --runs 3
    python -m bench.ort_ref --check --size 97x131      # max |caffe - onnxruntime| only

A child builds the randomly filled caffe.Net that bench.fcn_speed and
bench.torch_ref time (torch_ref.caffe_net: same seeds, same input),
exports it with surgery.onnx_export.to_onnx, frees the Caffe net, loads
the serialized graph into an InferenceSession (CPU provider, default graph
optimizations, intra-op threads = the row's thread count, one inter-op
thread) and times session.run (median of --runs after a warm-up). Peak RSS
is counted from after the Caffe net was freed: the serialized model, the
session's load and its runs. Forward only: onnxruntime has no training
pass for these graphs.
"""
import gc

import numpy as np

from . import common, torch_ref

MODELS = torch_ref.MODELS
SIZE = torch_ref.SIZE


def session(graph, threads):
    """An onnxruntime CPU session of the ONNX ModelProto `graph` on `threads` threads."""
    import onnxruntime
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return onnxruntime.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


def time_ort(model, size, runs, threads, check=False):
    """onnxruntime forward of the model in this process (call it in a child).
    With `check`, also Caffe's forward first and the largest difference of
    any output relative to that output's scale (max |caffe|)."""
    import onnxruntime
    from surgery.onnx_export import to_onnx
    proto, net = torch_ref.caffe_net(model, size)
    inputs = {k: net.blobs[k].data.copy() for k in net.inputs}
    reference = {k: v.copy() for k, v in net.forward().items()} if check else None
    outputs = list(net.outputs)
    graph = to_onnx(proto, net, model).SerializeToString()
    del net
    common.reset_peak_rss()        # the Caffe net that lent its weights is gone
    sess = session(graph, threads)
    del graph
    gc.collect()
    t = common.timeit(lambda: sess.run(outputs, inputs), runs)
    row = dict(model=model, size=size, mode="fwd", onnxruntime=onnxruntime.__version__,
               threads=int(threads), peak_rss_mb=common.peak_rss_mb(), **t)
    if check:
        got = dict(zip(outputs, sess.run(outputs, inputs)))
        row["max_rel_diff_vs_caffe"] = max(
            float(np.abs(got[k] - r).max()) / max(float(np.abs(r).max()), 1e-30)
            for k, r in reference.items())
        row["output_scale"] = max(float(np.abs(r).max()) for r in reference.values())
    return row


def main(argv=None):
    p = common.model_parser(__doc__, MODELS, SIZE)
    p.add_argument("--check", action="store_true", help="only compare the outputs with Caffe's")
    args = p.parse_args(argv)
    if args.child:
        model, size, runs, threads, check = args.config
        common.emit(time_ort(model, size, int(runs), int(threads), check == "1"))
        return
    threads = args.threads or common.N_CORES
    for model in args.models.split(","):
        r = common.run_child("ort_ref", [model, args.size, 1 if args.check else args.runs, threads,
                                         int(args.check)], env=common.thread_env(threads))
        if "error" in r:
            print(f"{model} {args.size}: failed: {r['error']}")
        elif args.check:
            print(f"{model} {args.size}: max |caffe - onnxruntime| / output scale = "
                  f"{r['max_rel_diff_vs_caffe']:.2g} (scale {r['output_scale']:.3g})")
        else:
            print(f"{model} {args.size}, {threads} thread(s): {r['ms']:.0f} ms "
                  f"(onnxruntime {r['onnxruntime']}, peak RSS {r['peak_rss_mb']:.0f} MiB)")


if __name__ == "__main__":
    main()
