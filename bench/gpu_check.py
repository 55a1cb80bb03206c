"""GPU checks for any machine with a GPU and the CUDA build: `make gpu-check`,
and the GPU kit's kit/run.sh.

    python -m bench.gpu_check --results DIR          # every part on GPU 0, DIR/<part>.txt each
    python -m bench.gpu_check --gpu 1 --parts compare,bench
    python -m bench.gpu_check --parts bench --torch-python /usr/bin/python3   # + the host's PyTorch
    python -m bench.gpu_check --parts compare --devices cpu,cpu/caffe \\
        --models voc-fcn-alexnet --size 64x64        # the comparison, CPU only

Parts (--parts; each prints its table and, with --results DIR, writes
DIR/<part>.txt: the table, notes, then one line `json: {...}` with the raw
numbers; each has a time budget, --budgets, and says when it was cut short):

1. compare: the outputs (`score`) and every parameter gradient of full-width
   FCN-8s, FCN-AlexNet and FCN-GoogLeNet on one 500x500 input (seeded random
   weights, input and labels, training's loss), on each of --devices, against
   the first: max |x - ref| / max |ref| per array, worst output and worst
   gradient, within --tolerance or not. A device is `cpu` or `gpuN`; `/caffe`
   forces Caffe's own engine on every layer, otherwise a GPU-mode net uses
   cuDNN wherever Caffe's DEFAULT engine does.
2. bench: ms per image forward and forward+backward at 500x500 on the GPU
   (bench.fcn_speed, one child per row: Caffe's passes and a device
   synchronize, nothing copied back), GFLOP/s as a fraction of the measured
   cuBLAS SGEMM peak (bench.peak) and of the nominal fp32 peak, GPU memory
   read in the child while the net is alive (cudaMemGetInfo); and the same
   nets in the host's PyTorch (--torch-python, default $TORCH_PYTHON) on the
   same GPU, fp32, TF32 off, cudnn.benchmark off (--cudnn-benchmark: on): the
   Caffe child exports the net as plain data (bench.torch_ref.export_plain)
   and the other interpreter, which needs torch and numpy only, times it.
3. train: bench.train_speed: 20 SGD iterations of full-width voc-fcn8s
   (stand-in init) on a generated VOC-layout fixture of 500x375 images
   through the real data layer and loader processes: ms/iteration, data wait.
4. demo: `python -m demo --gpu N`, its scores beside the CPU reference run's
   (the README's demo results).
5. nccl: two-rank `solvers.solve voc-fcn8s --gpus 0,1` for a few iterations
   on a fixture, if there are >= 2 GPUs; else a row saying so.

Every net runs in its own child process (bench.common.run_child), so a Caffe
abort is one failed row, not a crash. Without a usable GPU each part runs
what it can on the CPU and writes rows `needs a GPU: <why>`.
Exit status: 0 when every part ran in full and every difference is within
--tolerance, 1 otherwise, 2 on bad arguments (one line).
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

from common.cli import parse_width

from . import common, fcn_speed, peak, torch_ref, train_speed
from .part_report import Part

MODELS = ("voc-fcn8s", "voc-fcn-alexnet", "voc-fcn-googlenet")
PARTS = ("compare", "bench", "train", "demo", "nccl")
# Seconds per part on one H200 + 16 cores: about 5 minutes in all (nccl runs only
# with 2 GPUs; on one GPU its row takes no time).
BUDGETS = dict(compare=65, bench=85, train=40, demo=90, nccl=60)
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
NCCL_ITERS = 5


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




class Machine:
    """What the probe child found: GPU `gpu` usable or why not, and the GPU count."""

    def __init__(self, gpu, cuda_build, gpus, why_not):
        self.gpu, self.cuda_build, self.gpus, self.why_not = gpu, cuda_build, gpus, why_not

    @property
    def ok(self):
        return self.why_not is None

    @classmethod
    def probe(cls, gpu):
        r = common.run_child("gpu_check", ["probe"], timeout=300)
        if "error" in r:
            return cls(gpu, None, 0, f"probing pycaffe for GPUs failed: {r['error']}")
        why = None
        if not r["cuda_build"]:
            why = "this pycaffe is a CPU-only build"
        elif r["gpus"] <= gpu:
            why = (f"no GPU {gpu}: the CUDA build sees {r['gpus']} usable CUDA device(s) "
                   "(driver 580 or newer needed)")
        return cls(gpu, r["cuda_build"], r["gpus"], why)


def probe():
    """In a child: whether this pycaffe has CUDA, and the GPUs it can use."""
    from common.cli import gpu_build, gpu_count
    return dict(cuda_build=gpu_build(), gpus=gpu_count())


def needs_gpu_device(device):
    return parse_device(device)[0] is not None


# ---- 1. compare ----------------------------------------------------------------
COMPARE_COLUMNS = [("name", "model", None), ("device", "device", None),
                   ("reference", "vs", None), ("score_rel", "max rel. diff score", "{:.2e}"),
                   ("grad_rel", "max rel. diff gradients", "{:.2e}"),
                   ("grad_worst", "worst gradient", None), ("grads", "non-zero gradients", None),
                   ("status", "within tolerance", None)]


def compare_part(args, machine, log=print):
    """Rows {model, device, score_rel, grad_rel, grad_worst, status} per compared device."""
    part = Part("compare", f"GPU vs CPU: outputs and gradients ({args.size}, one forward + "
                f"backward, tolerance {args.tolerance:g})", COMPARE_COLUMNS, args.budgets["compare"])
    runnable = [d for d in args.devices if machine.ok or not needs_gpu_device(d)]
    ref_name = args.devices[0]
    if ref_name not in runnable or len(runnable) < 2:
        part.notes.append(f"Nothing to compare on this machine: the reference ({ref_name}) was not "
                          "run either.")
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for model in args.models:
            runs = {}
            todo = runnable if ref_name in runnable and len(runnable) >= 2 else []
            for device in todo:
                if not part.has_time():
                    continue
                path = os.path.join(tmp, f"{model}-{device.replace('/', '_')}.npz")
                log(f"  compare: {model} on {device}")
                r = common.run_child("gpu_check", ["compare", model, args.size, device, path],
                                     timeout=part.budget.left())
                part.cut_short |= bool(r.get("timed_out"))
                runs[device] = r if "error" in r else dict(r, arrays=dict(np.load(path)))
                if "error" not in r:
                    os.remove(path)
            for device in args.devices[1:]:
                row = dict(model=model, name=fcn_speed.SHORT.get(model, model), size=args.size,
                           device=device, reference=ref_name)
                if device not in runnable or ref_name not in runnable:
                    part.needs_gpu(row, machine.why_not)
                elif device not in runs or ref_name not in runs:
                    part.out_of_time(row)
                else:
                    part.add(*compared(row, runs[ref_name], runs[device], args.tolerance))
                log(f"  {model} {device} vs {ref_name}: {part.rows[-1]['status']}")
    return part


def compared(row, ref, other, tolerance):
    """(row, failed) for one device against the reference run."""
    if "error" in ref or "error" in other:
        which, r = (row["reference"], ref) if "error" in ref else (row["device"], other)
        return dict(row, status=f"failed: {which}: {r['error'][:160]}"), True
    row.update(summarize(relative_differences(ref["arrays"], other["arrays"])),
               ms=other["ms"], ref_ms=ref["ms"], grads=ref["nonzero_grads"])
    ok = max(row["score_rel"], row["grad_rel"] or 0.0) <= tolerance
    return dict(row, ok=ok, status="yes" if ok else f"NO (> {tolerance:g})"), not ok


# ---- 2. bench ------------------------------------------------------------------
BENCH_COLUMNS = [("name", "model", None), ("size", "input", None), ("mode", "pass", None),
                 ("engine", "engine", None), ("ms", "ms / image", "{:.2f}"),
                 ("gflops", "GFLOP/s", "{:.0f}"), ("frac_attainable", "of SGEMM peak", "{:.0%}"),
                 ("frac_nominal", "of nominal fp32 peak", "{:.0%}"),
                 ("gpu_net_mb", "GPU MiB (net)", "{:.0f}"), ("gpu_used_mb", "GPU MiB (device)", "{:.0f}"),
                 ("ratio", "Caffe / PyTorch", "{:.2f}"),
                 ("max_rel_diff_vs_caffe", "PyTorch vs Caffe max rel. diff", "{:.1e}"),
                 ("status", "status", None)]


def bench_row(model, size, mode, runs, gpu, export_dir):
    """In a child: bench.fcn_speed's measurement on GPU `gpu` (memory read
    while the net is alive); a forward row also exports the net for torch."""
    def export(proto, net):
        net.forward()
        torch_ref.export_plain(proto, net, export_dir, model)
    return fcn_speed.measure(model, size, mode, runs, gpu,
                             after=export if export_dir != "-" and mode == "fwd" else None)


def export_on_cpu(model, size, export_dir):
    """In a child: the net exported as plain data from the CPU (no GPU here)."""
    common.set_mode(None)
    proto, net = torch_ref.caffe_net(model, size)
    net.forward()
    torch_ref.export_plain(proto, net, export_dir, model)
    return dict(model=model, exported=export_dir)


def bench_part(args, machine, log=print):
    gpu = args.gpu
    name = gpu_name(gpu) if machine.ok else None
    part = Part("bench", f"Speed on GPU {gpu} ({name or 'no GPU'}), {args.size}, batch 1",
                BENCH_COLUMNS, args.budgets["bench"])
    nominal = nominal_tflops(name)
    attainable = None
    if machine.ok:
        log("  bench: cuBLAS SGEMM peak")
        peak_row = peak.run([common.N_CORES], runs=5, gpu=gpu, timeout=part.budget.left())[0]
        attainable = peak.best(peak_row) if "error" not in peak_row else None
        part.failed |= "error" in peak_row
        part.notes.append("SGEMM peak (n=3072 cuBLAS SGEMM as a Caffe InnerProduct, operands on the "
                          "device, timed to a cudaDeviceSynchronize): " +
                          (f"{attainable:.0f} GFLOP/s" if attainable else
                           f"not measured ({peak_row.get('error')})") +
                          f"; nominal fp32 peak: {nominal or 'unknown GPU'} TFLOP/s")
        part.data["peak"] = dict(peak_row, name=name, nominal_tflops=nominal)
    torch_python = args.torch_python
    if torch_python:
        part.notes.append(f"PyTorch: {torch_python} on {args.torch_device}, fp32, TF32 off "
                          f"(matmul and cuDNN), cudnn.benchmark {'on' if args.cudnn_benchmark else 'off'}; "
                          "the inputs on the device before timing, a synchronize per call; the "
                          "net built from the Caffe child's export (bench.torch_ref.export_plain)")
    with tempfile.TemporaryDirectory(prefix="gpu_check-export-") as export:
        for model in args.models:
            base = dict(model=model, name=fcn_speed.SHORT.get(model, model), size=args.size)
            caffe_fwd = None
            for mode in ("fwd", "fwdbwd"):
                row = dict(base, mode=mode, engine="Caffe")
                if not machine.ok:
                    part.needs_gpu(row, machine.why_not)
                    continue
                if not part.has_time(5):
                    part.out_of_time(row)
                    continue
                log(f"  bench: {model} {mode}")
                r = common.run_child("gpu_check", ["bench", model, args.size, mode, args.runs, gpu,
                                                   export if torch_python else "-"],
                                     timeout=part.budget.left())
                part.cut_short |= bool(r.get("timed_out"))
                row.update({k: v for k, v in r.items() if k not in row})
                if "error" in r:
                    part.add(dict(row, status=f"failed: {r['error'][:160]}"), failed=True)
                    continue
                row["frac_attainable"] = r["gflops"] / attainable if attainable else None
                row["frac_nominal"] = r["gflops"] / (nominal * 1e3) if nominal else None
                part.add(dict(row, status="ok"))
                caffe_fwd = row if mode == "fwd" else caffe_fwd
            if torch_python:
                torch_row(part, args, machine, base, caffe_fwd, export, log)
            else:
                part.add(dict(base, mode="fwd", engine="PyTorch",
                              status="skipped: no --torch-python given and TORCH_PYTHON is not set"))
    return part


def torch_row(part, args, machine, base, caffe_fwd, export, log):
    """The same net's forward in the host's PyTorch, beside Caffe's."""
    model = base["model"]
    row = dict(base, mode="fwd", engine="PyTorch")
    if not part.has_time(5):
        part.out_of_time(row)
        return
    if caffe_fwd is None:                      # no GPU row to take the export from
        log(f"  bench: {model} exported from the CPU for PyTorch")
        r = common.run_child("gpu_check", ["export", model, args.size, export],
                             timeout=part.budget.left())
        if "error" in r:
            part.add(dict(row, status=f"failed: export: {r['error'][:160]}"), failed=True)
            return
    log(f"  bench: {model} in PyTorch ({args.torch_python})")
    t = common.run_child("torch_ref", [export, model, args.runs, args.torch_device,
                                       int(args.cudnn_benchmark)],
                         timeout=part.budget.left(), python=args.torch_python, flag="--plain")
    part.cut_short |= bool(t.get("timed_out"))
    row.update({k: v for k, v in t.items() if k not in row})
    row["engine"] = f"PyTorch {t.get('torch', '')}".strip()
    if "needs_gpu" in t:
        part.needs_gpu(row, t["needs_gpu"])
    elif "error" in t:
        part.add(dict(row, status=f"failed: {t['error'][:160]}"), failed=True)
    else:
        if caffe_fwd is not None:
            row["ratio"] = caffe_fwd["ms"] / t["ms"]
            row["gflops"] = caffe_fwd["gflops"] * caffe_fwd["ms"] / t["ms"]
        status = "ok" if machine.ok else f"ok on {t['device']}; Caffe's side needs a GPU: {machine.why_not}"
        part.add(dict(row, status=status), failed=not machine.ok)
    for suffix in (".npz", ".json"):
        path = os.path.join(export, model + suffix)
        if os.path.exists(path):
            os.remove(path)


# ---- 3. train ------------------------------------------------------------------
def train_part(args, machine, log=print):
    part = Part("train", f"Training: {args.iters} SGD iterations of voc-fcn8s (width {args.width:g}, "
                "stand-in init) through the VOC data layer and its loader processes",
                train_speed.COLUMNS + [("status", "status", None)], args.budgets["train"])
    device = str(args.gpu) if machine.ok else "cpu"
    log(f"  train: voc-fcn8s on {'GPU ' + device if machine.ok else 'the CPU'}")
    left = part.budget.left()
    r = common.run_child("train_speed", [device, args.iters, args.width, args.images,
                                         args.image_size, max(1.0, left - 5)], timeout=left + 20)
    row = dict(model=train_speed.MODEL, device=device, width=args.width, image=args.image_size)
    row.update({k: v for k, v in r.items() if k not in ("error",)})
    if "error" in r:
        part.cut_short |= bool(r.get("timed_out"))
        part.add(dict(row, status=f"failed: {r['error'][:160]}"), failed=True)
        return part
    part.cut_short |= r["cut_short"]
    part.notes.append(f"{r['warmup']} warm-up iterations first; {r['images']} fixture images of "
                      f"{r['image']} (generated, VOC layout); setup (fixture, nets, stand-in "
                      f"weights) {r['setup_s']:.0f} s; data wait = time inside the data layer's "
                      "forward (waiting for the loader, copying into the tops) / the timed stretch.")
    if not machine.ok:
        part.needs_gpu(row, f"{machine.why_not} (measured on the CPU instead)")
    elif r["cut_short"]:
        part.add(dict(row, status=f"cut short: {r['iters']} of {r['asked']} iterations"), failed=True)
    else:
        part.add(dict(row, status="ok"))
    return part


# ---- 4. demo -------------------------------------------------------------------
DEMO_STAGES = {"FCN-32s": "fcn32s", "FCN-16s": "fcn16s", "FCN-8s": "fcn8s"}
DEMO_COLUMNS = [("stage", "stage", None), ("mean_iu", "mean IU (GPU)", "{:.3f}"),
                ("cpu_mean_iu", "mean IU (CPU reference run)", "{:.3f}"),
                ("cpu_range", "mean IU over the CPU grid", None),
                ("pixel_acc", "pixel acc (GPU)", "{:.3f}"), ("cpu_pixel_acc", "pixel acc (CPU)", "{:.3f}"),
                ("seconds", "s (GPU)", "{:.0f}"), ("cpu_seconds", "s (CPU, 2 cores)", "{:.0f}"),
                ("status", "status", None)]


def demo_reference(readme):
    """The CPU reference run's scores per stage and the grid's mean IU range,
    from the README's demo results (written by demo.robustness --readme);
    {} when the README has none."""
    from demo.robustness import README_BEGIN, README_END
    try:
        with open(readme) as f:
            text = f.read()
    except OSError:
        return {}
    if README_BEGIN not in text or README_END not in text:
        return {}
    section = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0]
    out, ranges = {}, {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        try:
            if cells[0] in DEMO_STAGES and len(cells) >= 6:
                out[DEMO_STAGES[cells[0]]] = dict(zip(("pixel_acc", "mean_acc", "mean_iu", "fw_iu",
                                                       "seconds"), map(float, cells[1:6])))
            elif cells[0] == "range" and len(cells) >= 5:
                ranges = dict(zip(DEMO_STAGES.values(), cells[2:5]))
        except ValueError:
            continue
    for stage, r in ranges.items():
        out.setdefault(stage, {})["range"] = r
    return out


def demo_part(args, machine, log=print):
    part = Part("demo", f"Demo (python -m demo) on GPU {args.gpu}, beside the CPU reference run",
                DEMO_COLUMNS, args.budgets["demo"])
    readme = os.path.join(common.ROOT, "README.md")
    reference = demo_reference(readme)
    if not reference:
        part.notes.append(f"No CPU reference scores found in {readme} (the demo-results section).")
    part.data["cpu_reference"] = reference
    result = {}
    if machine.ok:
        log(f"  demo: python -m demo --gpu {args.gpu} --out {args.demo_out}")
        result = run_demo(args.gpu, args.demo_out, part.budget.left())
        part.data["demo"] = {k: v for k, v in result.items() if k != "output"}
        part.notes += ["", "Last lines of the demo's output:", "```",
                       *result["output"].splitlines()[-15:], "```"]
    for title, stage in DEMO_STAGES.items():
        ref = reference.get(stage, {})
        row = dict(stage=title, cpu_mean_iu=ref.get("mean_iu"), cpu_range=ref.get("range"),
                   cpu_pixel_acc=ref.get("pixel_acc"), cpu_seconds=ref.get("seconds"))
        if not machine.ok:
            part.needs_gpu(row, machine.why_not)
        elif result.get("timed_out"):
            part.cut_short = True
            part.add(dict(row, status=f"not finished within the part's {part.budget.seconds:.0f} s"),
                     failed=True)
        elif stage not in result.get("stages", {}):
            part.add(dict(row, status=f"failed: exit {result.get('returncode')}"), failed=True)
        else:
            m = result["stages"][stage]
            part.add(dict(row, mean_iu=m["mean_iu"], pixel_acc=m["pixel_acc"],
                          seconds=result["seconds"].get(stage), status="ok"))
    return part


def run_demo(gpu, out, timeout):
    """`python -m demo --gpu N --out OUT` within `timeout` s; its results.json
    merged with {returncode, wall_s, output, timed_out}."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=common.ROOT)
    t0 = time.time()
    results = os.path.join(out, "results.json")
    if os.path.exists(results):
        os.remove(results)                       # never report an earlier run's scores
    try:
        proc = subprocess.run([sys.executable, "-m", "demo", "--gpu", str(gpu), "--out", out],
                              cwd=common.ROOT, env=env, capture_output=True, text=True,
                              timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return dict(returncode=None, timed_out=True, wall_s=time.time() - t0,
                    output=text + f"\n(timed out after {timeout:.0f} s)")
    out_text = proc.stdout + (proc.stderr[-3000:] if proc.returncode else "")
    r = dict(returncode=proc.returncode, wall_s=time.time() - t0, output=out_text.strip())
    if proc.returncode == 0 and os.path.exists(results):
        with open(results) as f:
            r.update(json.load(f))
    return r


# ---- 5. nccl -------------------------------------------------------------------
NCCL_COLUMNS = [("command", "command", None), ("gpus", "GPUs", None), ("seconds", "s", "{:.0f}"),
                ("returncode", "exit", None), ("status", "status", None)]


def nccl_part(args, machine, log=print):
    part = Part("nccl", "Two-rank NCCL training (solvers.solve --gpus 0,1)", NCCL_COLUMNS,
                args.budgets["nccl"])
    cmd = ["solvers.solve", "voc-fcn8s", "--gpus", "0,1", "--iters", str(NCCL_ITERS),
           "--width", f"{args.width:g}", "--score-every", "0", "--snapshot-every", "1000000"]
    row = dict(command="python -m " + " ".join(cmd), gpus=machine.gpus)
    if not machine.ok:
        part.needs_gpu(row, machine.why_not)
        return part
    if machine.gpus < 2:
        part.add(dict(row, status=f"skipped: needs 2 GPUs, this machine has {machine.gpus}"))
        return part
    import subprocess
    with tempfile.TemporaryDirectory(prefix="gpu_check-nccl-") as tmp:
        root, weights, out = (os.path.join(tmp, x) for x in ("data", "standin.caffemodel", "run"))
        r = common.run_child("gpu_check", ["standin", root, weights], timeout=part.budget.left())
        if "error" in r:
            part.add(dict(row, status=f"failed: fixture: {r['error'][:160]}"), failed=True)
            return part
        log(f"  nccl: {row['command']}")
        t0 = time.time()
        try:
            proc = subprocess.run([sys.executable, "-m", *cmd, "--root", root, "--weights", weights,
                                   "--out", out], cwd=common.ROOT, capture_output=True, text=True,
                                  env=dict(os.environ, PYTHONPATH=common.ROOT),
                                  timeout=max(1.0, part.budget.left()))
        except subprocess.TimeoutExpired:
            part.cut_short = True
            part.add(dict(row, seconds=time.time() - t0, status="timed out"), failed=True)
            return part
        done = os.path.exists(os.path.join(out, "final.caffemodel"))
        ok = proc.returncode == 0 and done
        part.add(dict(row, seconds=time.time() - t0, returncode=proc.returncode,
                      status="ok" if ok else "failed" + ("" if done else ": no final.caffemodel")),
                 failed=not ok)
        part.notes += ["", "Last lines of its output:", "```",
                       *(proc.stdout + proc.stderr).strip().splitlines()[-15:], "```"]
    return part


def standin(root, weights):
    """In a child: the nccl part's fixture (SBD-layout train, VOC-layout
    seg11valid, as voc-fcn8s reads them) and stand-in initial weights."""
    from data.layouts import write_sbdd, write_voc
    from netio.nets import save_weights
    size = (375, 500)
    write_sbdd(root, [(f"t{k}", size) for k in range(8)], split="train")
    write_voc(root, [(f"v{k}", size) for k in range(2)], split="seg11valid")
    common.set_mode(None)
    net = common.load_net(common.deploy_proto("voc-fcn8s", (64, 64)))
    common.fill_random(net)
    save_weights(net, weights)
    return dict(root=root, weights=weights)


# ---- command line --------------------------------------------------------------
PART_RUNNERS = dict(compare=compare_part, bench=bench_part, train=train_part, demo=demo_part,
                    nccl=nccl_part)


def child(config):
    kind, *rest = config
    if kind == "probe":
        common.emit(probe())
    elif kind == "compare":
        model, size, device, path = rest
        common.emit(forward_backward(model, size, device, path))
    elif kind == "bench":
        model, size, mode, runs, gpu, export_dir = rest
        common.emit(bench_row(model, size, mode, int(runs), int(gpu), export_dir))
    elif kind == "export":
        common.emit(export_on_cpu(*rest))
    elif kind == "standin":
        common.emit(standin(*rest))
    else:
        raise SystemExit(f"unknown child {kind!r}")


def parse_budgets(text):
    """'compare=60,demo=120' -> BUDGETS with those replaced."""
    budgets = dict(BUDGETS)
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        part, _, seconds = item.partition("=")
        try:
            value = float(seconds)
        except ValueError:
            value = -1
        if part not in PARTS or not value > 0:
            raise UsageError(f"--budgets: {item!r} is not PART=SECONDS with PART in {','.join(PARTS)}")
        budgets[part] = value
    return budgets


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check",
                                description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("config", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--gpu", type=int, default=0, help="GPU id (default 0)")
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of " + ",".join(PARTS))
    p.add_argument("--results", metavar="DIR", help="write DIR/<part>.txt for every part run")
    p.add_argument("--models", default=",".join(MODELS), help="compare/bench: comma list of models")
    p.add_argument("--size", default="500x500", help="compare/bench: HxW input (default 500x500)")
    p.add_argument("--devices", default=None,
                   help="compare: reference first (default cpu,gpuN,gpuN/caffe)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="compare: largest max-relative difference accepted (default 1e-3)")
    p.add_argument("--runs", type=int, default=10, help="bench: timed runs per row (default 10)")
    p.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON"), metavar="PATH",
                   help="bench: an interpreter with torch + numpy for the PyTorch column "
                        "(default $TORCH_PYTHON; none: the column is skipped)")
    p.add_argument("--torch-device", default=None, help="bench: torch's device (default cuda:N)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="bench: torch.backends.cudnn.benchmark on (default off)")
    p.add_argument("--width", default="1",
                   help="train/nccl: trunk width (default 1, full width)")
    p.add_argument("--iters", type=int, default=20, help="train: timed SGD iterations (default 20)")
    p.add_argument("--images", type=int, default=24, help="train: fixture training images")
    p.add_argument("--image-size", default="375x500", help="train: fixture image HxW (default 375x500)")
    p.add_argument("--demo-out", default=os.path.join("runs", "demo-gpu"))
    p.add_argument("--budgets", default="",
                   help="seconds per part, e.g. compare=60,demo=120 (defaults: " +
                        ",".join(f"{k}={v}" for k, v in BUDGETS.items()) + ")")
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
    for flag, text in (("--size", args.size), ("--image-size", args.image_size)):
        try:
            h, w = common.parse_size(text)
        except ValueError:
            raise UsageError(f"{flag}: {text!r} is not HxW, e.g. 500x500") from None
        if h < 1 or w < 1:
            raise UsageError(f"{flag}: {text!r} must be positive")
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
    for flag, value in (("--runs", args.runs), ("--iters", args.iters), ("--images", args.images)):
        if value < 1:
            raise UsageError(f"{flag}: {value} must be at least 1")
    if args.torch_python and not os.access(args.torch_python, os.X_OK):
        raise UsageError(f"--torch-python: {args.torch_python} is not an executable file")
    try:
        args.width = parse_width(args.width)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(str(exc)) from None
    args.torch_device = args.torch_device or f"cuda:{args.gpu}"
    args.budgets = parse_budgets(args.budgets)
    if args.results:
        try:
            os.makedirs(args.results, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--results: cannot create {args.results}: {exc.strerror}") from None
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
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    machine = Machine.probe(args.gpu)
    log(f"bench.gpu_check: GPU {args.gpu}: " + ("usable" if machine.ok else machine.why_not) +
        f"; parts {','.join(args.parts)}")
    failed = False
    for name in args.parts:
        log(f"{name}: budget {args.budgets[name]:.0f} s")
        part = PART_RUNNERS[name](args, machine, log)
        failed |= part.failed
        print(part.text(), flush=True)
        if args.results:
            log(f"{name}: wrote {part.write(args.results)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
