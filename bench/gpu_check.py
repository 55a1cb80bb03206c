"""GPU checks for any machine with a GPU and the CUDA build (`make gpu-check`).

    python -m bench.gpu_check                        # all three parts on GPU 0
    python -m bench.gpu_check --gpu 1 --parts compare,bench
    python -m bench.gpu_check --parts compare --devices cpu,cpu/caffe \\
        --models voc-fcn-alexnet --size 64x64        # the comparison, CPU only

1. compare: the outputs (`score`) and every parameter gradient of full-width
   FCN-8s, FCN-AlexNet and FCN-GoogLeNet on one 500x500 input (seeded random
   weights, input and labels, training's loss), computed on each of --devices
   and compared with the first: max |x - ref| / max |ref| per array, the worst
   output and the worst gradient printed. A device is `cpu` or `gpuN`;
   `/caffe` forces Caffe's own engine on every layer (no cuDNN), otherwise a
   GPU-mode net uses cuDNN wherever Caffe's DEFAULT engine does.
2. bench: ms per image, forward and forward+backward at 500x500 on the GPU
   (bench.fcn_speed in one child per row), GFLOP/s as a fraction of the
   attainable fp32 peak (a cuBLAS SGEMM through Caffe, bench.peak) and of the
   GPU's nominal fp32 peak where the GPU is in NOMINAL_TFLOPS, and the GPU
   memory nvidia-smi reports for the child.
3. demo: `python -m demo` trained on the GPU; its score table.

Every net runs in its own child process (bench.common.run_child), so a Caffe
abort (GPU mode on a CPU-only build, no driver) is one failed row, not a crash.
Exit status: 0 when every part ran and every difference is within
--tolerance, 1 otherwise, 2 on bad arguments.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import common, fcn_speed, peak

MODELS = ("voc-fcn8s", "voc-fcn-alexnet", "voc-fcn-googlenet")
PARTS = ("compare", "bench", "demo")
DEVICE = re.compile(r"^(cpu|gpu(\d+))(/caffe)?$")
# Nominal fp32 (non-tensor) peak, TFLOP/s, by the name nvidia-smi reports.
NOMINAL_TFLOPS = {"H100 80GB HBM3": 66.9, "H100 SXM": 66.9, "H100 PCIe": 51.2, "H100 NVL": 60.0,
                  "H200": 66.9, "A100": 19.5, "A10": 31.2, "L40S": 91.6, "L4": 30.3,
                  "RTX 4090": 82.6, "RTX 3090": 35.6, "V100": 15.7, "T4": 8.1}
# Layer types whose DEFAULT engine is cuDNN in a GPU-mode net, and the
# parameter that holds their `engine`.
ENGINE_FIELDS = {"Convolution": "convolution_param", "Pooling": "pooling_param",
                 "ReLU": "relu_param", "Sigmoid": "sigmoid_param", "TanH": "tanh_param",
                 "Softmax": "softmax_param", "SoftmaxWithLoss": "softmax_param",
                 "LRN": "lrn_param"}


class UsageError(ValueError):
    """Bad command-line input (exit 2, one line)."""


def parse_device(text):
    """'gpu0/caffe' -> (gpu id or None, force_caffe_engine)."""
    m = DEVICE.match(text.strip())
    if not m:
        raise UsageError(f"--devices: {text!r} is not cpu, gpuN, cpu/caffe or gpuN/caffe")
    return (None if m.group(2) is None else int(m.group(2))), bool(m.group(3))


def force_caffe_engine(proto):
    """Every layer with an engine choice runs Caffe's own code (engine: CAFFE);
    SoftmaxWithLoss passes its softmax_param to the Softmax it builds."""
    for layer in proto.layer:
        if layer.type in ENGINE_FIELDS:
            param = getattr(layer, ENGINE_FIELDS[layer.type])
            param.engine = type(param).Engine.Value("CAFFE")
    return proto


# ---- 1. compare ----------------------------------------------------------------
def forward_backward(model, size, device, out_path, seed=0):
    """In a child: one forward + backward on `device`; score and gradients to .npz."""
    import caffe  # noqa: F401  (a clear import error before set_mode)
    gpu, caffe_engine = parse_device(device)
    common.set_mode(gpu)
    proto = common.deploy_proto(model, common.parse_size(size), loss=True)
    if caffe_engine:
        force_caffe_engine(proto)
    net = common.load_net(proto)
    common.fill_random(net, seed)
    common.fill_inputs(net, seed)
    t0 = time.perf_counter()
    net.forward()
    net.backward()
    arrays = {"score": net.blobs["score"].data.copy()}
    for name, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            arrays[f"grad {name}[{i}]"] = blob.diff.copy()
    ms = (time.perf_counter() - t0) * 1e3
    nonzero = sum(1 for k, v in arrays.items() if k.startswith("grad ") and np.any(v))
    tmp = out_path + ".part.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, out_path)
    return dict(device=device, arrays=len(arrays), nonzero_grads=nonzero, ms=ms)


def relative_differences(ref, other):
    """{key: max |other - ref| / max |ref|} over the keys both hold (shapes must match)."""
    out = {}
    for key in ref:
        if key not in other:
            raise ValueError(f"{key} missing from the compared run")
        a, b = ref[key], other[key]
        if a.shape != b.shape:
            raise ValueError(f"{key}: shape {b.shape} vs reference {a.shape}")
        scale = float(np.abs(a).max())
        diff = float(np.abs(b - a).max())
        out[key] = diff / scale if scale > 0 else diff
    return out


def summarize(diffs):
    """Worst output difference and worst gradient difference (with its array)."""
    grads = {k: v for k, v in diffs.items() if k.startswith("grad ")}
    worst = max(grads, key=grads.get) if grads else None
    return dict(score_rel=diffs.get("score"), grad_rel=grads.get(worst), grad_worst=worst)


def compare(models, size, devices, tolerance, log=print):
    """Rows {model, device, score_rel, grad_rel, grad_worst, ok | error}."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for model in models:
            runs = {}
            for device in devices:
                path = os.path.join(tmp, f"{model}-{device.replace('/', '_')}.npz")
                r = common.run_child("gpu_check", ["compare", model, size, device, path])
                runs[device] = r if "error" in r else dict(r, arrays=dict(np.load(path)))
            ref_name = devices[0]
            ref = runs[ref_name]
            for device in devices[1:]:
                row = dict(model=model, size=size, device=device, reference=ref_name)
                other = runs[device]
                if "error" in ref:
                    row["error"] = f"{ref_name}: {ref['error']}"
                elif "error" in other:
                    row["error"] = f"{device}: {other['error']}"
                else:
                    row.update(summarize(relative_differences(ref["arrays"], other["arrays"])),
                               ms=other["ms"], ref_ms=ref["ms"], grads=ref["nonzero_grads"])
                    row["ok"] = max(row["score_rel"], row["grad_rel"] or 0.0) <= tolerance
                log(f"  {model} {device} vs {ref_name}: " + (row["error"] if "error" in row else
                    f"score {row['score_rel']:.2e}, gradients {row['grad_rel']:.2e} "
                    f"({row['grad_worst']})"))
                rows.append(row)
    return rows


COMPARE_COLUMNS = [("name", "model", None), ("device", "device", None),
                   ("reference", "vs", None), ("score_rel", "max rel. diff score", "{:.2e}"),
                   ("grad_rel", "max rel. diff gradients", "{:.2e}"),
                   ("grad_worst", "worst gradient", None), ("grads", "non-zero gradients", None),
                   ("verdict", "within tolerance", None)]


def compare_table(rows, tolerance):
    shown = []
    for r in rows:
        verdict = f"failed: {r['error'][:100]}" if "error" in r else \
            ("yes" if r["ok"] else f"NO (> {tolerance:g})")
        shown.append(dict(r, name=fcn_speed.SHORT.get(r["model"], r["model"]), verdict=verdict))
    return common.markdown(shown, COMPARE_COLUMNS)


# ---- 2. bench ------------------------------------------------------------------
def gpu_memory_mb(pid, gpu):
    """GPU memory nvidia-smi reports for process `pid` (MiB), else None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits", "-i", str(gpu)],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid) and fields[1].isdigit():
            return float(fields[1])
    return None


def gpu_name(gpu):
    """The GPU's name from nvidia-smi, or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader",
                              "-i", str(gpu)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def nominal_tflops(name):
    """Nominal fp32 peak of a GPU called `name` (longest matching key), or None."""
    keys = [k for k in NOMINAL_TFLOPS if name and k in name]
    return NOMINAL_TFLOPS[max(keys, key=len)] if keys else None


def bench_row(model, size, mode, runs, gpu):
    """In a child: bench.fcn_speed's measurement plus this process's GPU memory."""
    row = fcn_speed.measure(model, size, mode, runs, gpu)
    row["gpu_mem_mb"] = gpu_memory_mb(os.getpid(), gpu)
    return row


def bench(models, size, gpu, runs, log=print):
    """(rows, peak row, GPU name): forward and forward+backward per model."""
    name = gpu_name(gpu)
    peak_row = peak.run([common.N_CORES], runs=5, gpu=gpu)[0]
    attainable = peak.best(peak_row)
    nominal = nominal_tflops(name)
    rows = []
    for model in models:
        for mode in ("fwd", "fwdbwd"):
            r = common.run_child("gpu_check", ["bench", model, size, mode, runs, gpu])
            r.update(model=model, size=size, mode=mode)
            if "gflops" in r:
                r["frac_attainable"] = r["gflops"] / attainable if attainable else None
                r["frac_nominal"] = r["gflops"] / (nominal * 1e3) if nominal else None
            log(f"  {model} {mode}: " + (r["error"] if "error" in r else f"{r['ms']:.1f} ms"))
            rows.append(r)
    return rows, dict(peak_row, name=name, nominal_tflops=nominal)


BENCH_COLUMNS = [("name", "model", None), ("size", "input", None), ("mode", "pass", None),
                 ("ms", "ms / image", "{:.1f}"), ("gflops", "GFLOP/s", "{:.0f}"),
                 ("frac_attainable", "of SGEMM peak", "{:.0%}"),
                 ("frac_nominal", "of nominal fp32 peak", "{:.0%}"),
                 ("gpu_mem_mb", "GPU memory MiB", "{:.0f}"), ("runs", "runs", None)]


def bench_table(rows):
    shown = []
    for r in rows:
        r = dict(r, name=fcn_speed.SHORT.get(r["model"], r["model"]))
        if "error" in r:
            r["mode"] = f"{r['mode']} (failed: {r['error'][:100]})"
        shown.append(r)
    return common.markdown(shown, BENCH_COLUMNS)


# ---- 3. demo -------------------------------------------------------------------
def demo(gpu, out, timeout=3600):
    """Train `python -m demo` on GPU `gpu`; {returncode, seconds, output}."""
    env = dict(os.environ, PYTHONPATH=common.ROOT)
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "demo", "--gpu", str(gpu), "--out", out],
                              cwd=common.ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(returncode=None, seconds=timeout, output=f"timed out after {timeout} s")
    text = proc.stdout + (proc.stderr[-3000:] if proc.returncode else "")
    return dict(returncode=proc.returncode, seconds=time.time() - t0, output=text.strip())


# ---- command line --------------------------------------------------------------
def child(config):
    kind, *rest = config
    if kind == "compare":
        model, size, device, path = rest
        common.emit(forward_backward(model, size, device, path))
    elif kind == "bench":
        model, size, mode, runs, gpu = rest
        common.emit(bench_row(model, size, mode, int(runs), int(gpu)))
    else:
        raise SystemExit(f"unknown child {kind!r}")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check",
                                description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("config", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--gpu", type=int, default=0, help="GPU id (default 0)")
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of " + ",".join(PARTS))
    p.add_argument("--models", default=",".join(MODELS), help="comma list of model names")
    p.add_argument("--size", default="500x500", help="HxW input (default 500x500)")
    p.add_argument("--devices", default=None,
                   help="compare: reference first (default cpu,gpuN,gpuN/caffe)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest max-relative difference accepted (default 1e-3)")
    p.add_argument("--runs", type=int, default=10, help="bench: timed runs per row")
    p.add_argument("--demo-out", default=os.path.join("runs", "demo-gpu"))
    args = p.parse_args(argv)
    if args.child:
        return args
    if args.config:
        raise UsageError(f"unexpected argument {args.config[0]!r} (see --help)")
    parts = [x for x in args.parts.split(",") if x]
    bad = [x for x in parts if x not in PARTS]
    if bad or not parts:
        raise UsageError(f"--parts: {','.join(bad) or 'nothing'} not in {','.join(PARTS)}")
    args.parts = parts
    from net_specs import get_model
    args.models = [m for m in args.models.split(",") if m]
    for m in args.models:
        try:
            get_model(m)
        except (KeyError, ValueError):
            raise UsageError(f"--models: unknown model {m!r} (python -m net_specs list)") from None
    if not args.models:
        raise UsageError("--models: no model given")
    try:
        h, w = common.parse_size(args.size)
    except ValueError:
        raise UsageError(f"--size: {args.size!r} is not HxW, e.g. 500x500") from None
    if h < 1 or w < 1:
        raise UsageError(f"--size: {args.size!r} must be positive")
    if args.gpu < 0:
        raise UsageError(f"--gpu: {args.gpu} is not a GPU id")
    devices = args.devices or f"cpu,gpu{args.gpu},gpu{args.gpu}/caffe"
    args.devices = [d.strip() for d in devices.split(",") if d.strip()]
    for d in args.devices:
        parse_device(d)
    if len(args.devices) < 2:
        raise UsageError("--devices: give a reference and at least one device to compare")
    if not (args.tolerance > 0 and np.isfinite(args.tolerance)):
        raise UsageError(f"--tolerance: {args.tolerance} must be a positive number")
    if args.runs < 1:
        raise UsageError(f"--runs: {args.runs} must be at least 1")
    return args


def main(argv=None):
    try:
        args = parse_args(argv)
    except UsageError as exc:
        print(f"bench.gpu_check: error: {exc}", file=sys.stderr)
        return 2
    if args.child:
        child(args.config)
        return 0
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    failed = False
    if "compare" in args.parts:
        log(f"compare: {', '.join(args.devices[1:])} against {args.devices[0]}, {args.size}")
        rows = compare(args.models, args.size, args.devices, args.tolerance, log)
        failed |= any("error" in r or not r["ok"] for r in rows)
        print(f"## GPU vs CPU: outputs and gradients ({args.size}, one forward + backward)\n")
        print(compare_table(rows, args.tolerance) + "\n")
    if "bench" in args.parts:
        log(f"bench: GPU {args.gpu}, {args.size}, forward and forward+backward")
        rows, peak_row = bench(args.models, args.size, args.gpu, args.runs, log)
        failed |= any("error" in r for r in rows) or "error" in peak_row
        print(f"## Speed on GPU {args.gpu} ({peak_row.get('name') or 'name unknown'})\n")
        print(bench_table(rows) + "\n")
        print("SGEMM peak (cuBLAS through a Caffe InnerProduct): " +
              (f"{peak_row['caffe_gflops']:.0f} GFLOP/s" if "caffe_gflops" in peak_row
               else f"not measured ({peak_row.get('error', 'no result')})") +
              "; nominal fp32 peak: " + (f"{peak_row['nominal_tflops']} TFLOP/s"
                                         if peak_row["nominal_tflops"] else "unknown GPU") + "\n")
    if "demo" in args.parts:
        log(f"demo: python -m demo --gpu {args.gpu} --out {args.demo_out}")
        d = demo(args.gpu, args.demo_out)
        failed |= d["returncode"] != 0
        print(f"## Demo on GPU {args.gpu} ({d['seconds']:.0f} s, exit {d['returncode']})\n")
        print("```\n" + "\n".join(d["output"].splitlines()[-40:]) + "\n```")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
