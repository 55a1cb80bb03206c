"""The command-line layer every CLI shares: argument types, the device flags,
the model/dataset flags, and the wrapper that turns our errors into one line
and an exit status.

Exit statuses, the same in every CLI: 0 success; 2 a user error (a bad flag,
a missing or unusable file, a model that does not fit) reported as one line
`<prog>: error: <message>`; 130 interrupted. A CLI may add its own (infer: 3
when --keep-going skipped images; solve: 3 when training diverged).
"""
import argparse
import functools
import math
import sys
from fractions import Fraction

from . import caffe_log
from .errors import InputError, UserError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# What a CLI reports as a user error (one line, EXIT_USAGE) rather than a traceback.
USER_ERRORS = (UserError, FileNotFoundError)


# ------------------------------------------------------------------ types

def _number(text, flag):
    try:
        value = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{flag} must be a number or fraction like 1/16, "
                                         f"got {text!r}") from None
    return value


def parse_width(text):
    """--width: a positive finite number or fraction such as 1/8."""
    width = _number(text, "--width")
    if not width > 0:
        raise argparse.ArgumentTypeError(f"--width must be positive, got {text!r}")
    return width


def positive_float(flag):
    """An argparse type: a finite number > 0 (learning rates)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{flag} must be a positive finite number, got {text!r}")
        return value
    return parse


def int_at_least(flag, low):
    """An argparse type: an integer >= low."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{flag} must be at least {low}, got {value}")
        return value
    return parse


def parse_mean(value):
    """--mean, the one check: 'B,G,R' text or three numbers -> three finite
    floats; anything else is an InputError naming --mean."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        mean = tuple(float(x) for x in parts)
    except (TypeError, ValueError):
        mean = ()
    if len(mean) != 3 or not all(math.isfinite(m) for m in mean):
        raise InputError(f"--mean must be three finite comma-separated numbers B,G,R, got {value!r}")
    return mean


def check_classes(value):
    """--classes, the one check: a class count, an integer >= 1 (text from
    the command line, or an int); anything else is an InputError naming it."""
    try:
        classes = int(value) if isinstance(value, str) else value
    except ValueError:
        classes = None
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise InputError(f"--classes must be a positive integer, got {value!r}")
    return classes


def argparse_type(check):
    """An argparse type from a check that raises InputError."""
    def parse(text):
        try:
            return check(text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


# ------------------------------------------------------------------ flag groups

def add_device_args(parser, multi_gpu=False):
    """--cpu | --gpu N (| --gpus 0,1 for data-parallel training)."""
    dev = parser.add_mutually_exclusive_group()
    dev.add_argument("--cpu", action="store_true", help="run on the CPU (default)")
    dev.add_argument("--gpu", type=int_at_least("--gpu", 0), metavar="N", help="run on GPU N")
    if multi_gpu:
        dev.add_argument("--gpus", help="comma-separated GPU ids: data-parallel training via NCCL")
    return dev


def add_model_args(parser, dataset=False, root=True, class_names=True):
    """The flags that pick a model's data: --dataset, --classes, --mean,
    --class-names, --root, --width (net_specs.resolve.resolve_args reads them)."""
    if dataset:
        parser.add_argument("--dataset", help="run a template (fcn8s, ...) on this dataset")
    parser.add_argument("--classes", type=argparse_type(check_classes),
                        help="class count (custom datasets / templates)")
    parser.add_argument("--mean", help="BGR mean B,G,R (custom datasets)")
    if class_names:
        parser.add_argument("--class-names", help="comma-separated class names (custom datasets)")
    if root:
        parser.add_argument("--root", help="dataset directory (default: the dataset's location)")
    parser.add_argument("--width", type=parse_width, default=1.0,
                        help="trunk width of narrowed test/demo nets, e.g. 1/16 (default 1)")


# ------------------------------------------------------------------ devices

def gpu_build():
    """Whether the imported pycaffe was built with CUDA (it links the CUDA
    runtime); a CPU-only build aborts the process on any GPU call."""
    import caffe  # noqa: F401  (loads libcaffe)
    try:
        with open("/proc/self/maps") as f:
            return "libcudart" in f.read()
    except OSError:
        return True             # cannot tell: let Caffe decide


@functools.lru_cache(maxsize=None)
def cuda_runtime():
    """The CUDA runtime library Caffe loaded (ctypes.CDLL), None on a CPU-only
    build: calls through it share Caffe's device, context and streams.
    Looked up once per process (timed loops synchronize through it)."""
    import ctypes
    if not gpu_build():
        return None
    with open("/proc/self/maps") as f:
        path = next(line.split()[-1] for line in f if "libcudart" in line)
    return ctypes.CDLL(path)


def gpu_count():
    """CUDA devices this process can use: 0 on a CPU-only build, and on the
    CUDA build without a GPU or driver (asked of the CUDA runtime Caffe
    loaded; Caffe itself would abort)."""
    import ctypes
    runtime = cuda_runtime()
    if runtime is None:
        return 0
    count = ctypes.c_int(0)
    if runtime.cudaGetDeviceCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def set_device(gpu):
    """CPU mode for None, else GPU `gpu`; a UserError (not a Caffe abort) on a
    CPU-only build or where GPU `gpu` does not exist."""
    import caffe
    if gpu is None:
        caffe.set_mode_cpu()
        return
    if not gpu_build():
        raise UserError(f"--gpu {gpu}: this pycaffe is a CPU-only build; run without --gpu "
                        "(or with --cpu), or use a CUDA build: make install CUDA=1, or the "
                        "Docker image (make docker-build, then make docker-run CMD=...)")
    available = gpu_count()
    if gpu >= available:
        raise UserError(f"--gpu {gpu}: no such GPU: this machine has {available} usable CUDA "
                        "device(s) (driver 580 or newer needed); run with --cpu")
    caffe.set_device(int(gpu))
    caffe.set_mode_gpu()


# ------------------------------------------------------------------ the wrapper

def run_cli(prog, body, args, errors=USER_ERRORS, quiet_caffe=False):
    """Call body(args) and return its exit status; a user error becomes one
    line `prog: error: ...` and EXIT_USAGE, Ctrl-C becomes EXIT_INTERRUPTED.
    `quiet_caffe` hides Caffe's INFO log (set before Caffe first logs)."""
    if quiet_caffe:
        caffe_log.quiet_caffe()
    try:
        return body(args) or 0
    except errors as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def one_line(exc):
    """An exception's message on one line (FileNotFoundError's own text included)."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
