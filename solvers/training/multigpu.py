"""Data-parallel training on several GPUs through Caffe's NCCL support.

One spawned process per GPU (as BVLC's python/train.py does): each builds
the same solver, rank 0 loads the initial weights (a resumed run: every rank
restores the solver state) and NCCL broadcasts them, gradients are
all-reduced after every backward (once per iteration when iter_size > 1).
Each rank reads the training split in its own seeded order; rank 0 alone
scores, snapshots and writes the run. Every rank steps the same number of
iterations, fixed before the ranks start (a resumed run: what is left of
max_iter after the state's iteration, as single-GPU training does). The
parent waits on all ranks and stops the rest when one fails (`supervise`).
Needs pycaffe built with NCCL (`make install CUDA=1` or the Docker image); the
CPU build has none.
"""
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Optional

import caffe

from common.cli import EXIT_INTERRUPTED, EXIT_USAGE, USER_ERRORS, one_line
from common.errors import InputError, UserError

from .run import Run, TrainingDiverged, check_weights, hard_exit, remaining_iterations, \
    solverstate_iter


@dataclass(frozen=True)
class MultiGpuConfig:
    """What a worker needs of the command line beside the net's record
    (net_specs.NetConfig: width, data location and loading), and nothing more."""
    gpus: tuple
    out: str
    weights: tuple = ()
    resume: Optional[str] = None
    iters: Optional[int] = None
    score_every: int = 4000
    snapshot_every: int = 4000
    base_lr: Optional[float] = None

    @classmethod
    def from_args(cls, args, model_name=None):
        gpus = tuple(int(g) for g in parse_gpus(args.gpus))
        return cls(gpus=gpus, out=args.out or os.path.join("runs", model_name or args.model),
                   weights=tuple(args.weights or ()), resume=args.resume, iters=args.iters,
                   score_every=args.score_every, snapshot_every=args.snapshot_every,
                   base_lr=args.base_lr)


def parse_gpus(text):
    """'0,1,2' -> [0, 1, 2]; an InputError naming --gpus otherwise."""
    try:
        gpus = [int(g) for g in str(text).split(",") if g.strip()]
    except ValueError:
        gpus = []
    if not gpus or min(gpus) < 0:
        raise InputError(f"--gpus must list GPU ids like 0,1, got {text!r}")
    if len(set(gpus)) != len(gpus):
        raise InputError(f"--gpus lists a GPU twice: {text!r}")
    return gpus


def check_gpus_exist(gpus):
    """Every listed GPU must exist before workers start: Caffe would abort in
    each worker process instead of saying which id is missing."""
    from common.cli import gpu_count
    available = gpu_count()
    missing = [g for g in gpus if g >= available]
    if missing:
        raise InputError(f"--gpus {','.join(map(str, gpus))}: no GPU {missing[0]}: this machine "
                         f"has {available} usable CUDA device(s) (driver 580 or newer needed)")


def iterations_for(config, model):
    """The iterations every rank steps: --iters, else what is left of the
    solver's max_iter after the resumed state's iteration."""
    start = solverstate_iter(config.resume) if config.resume else 0
    return remaining_iterations(config.iters, model.solver.max_iter, start)


def make_run(config, net, rank):
    """Rank `rank`'s Run (rank 0 in the run directory, the others under ranks/).

    Only rank 0 takes Caffe's periodic snapshots: this Caffe's root_solver()
    is true in every process of a multi-process run, so every rank would
    write its own (~1 GB each at full width). With iter_size > 1 the
    gradients are reduced once per iteration (layer_wise_reduce off): a
    layer-wise all-reduce after every one of the iter_size backwards would
    run while the next backward accumulates into the same buffers."""
    out = config.out if rank == 0 else os.path.join(config.out, "ranks", str(rank))
    overrides = {"base_lr": config.base_lr} if config.base_lr is not None else {}
    if net.model.solver.iter_size > 1:
        overrides["layer_wise_reduce"] = False
    return Run.open(replace(net, seed=net.seed + rank), out_dir=out,
                    snapshot_every=config.snapshot_every if rank == 0 else 0,
                    solver_overrides=overrides or None)


def open_rank(config, net, rank):
    """Rank `rank`'s Run, initialised: a resumed run restores the solver state
    (iteration, momentum / Adam history, data position) on every rank, as
    BVLC's train.py does; rank 0 alone loads fresh weights (NCCL broadcasts
    them)."""
    run = make_run(config, net, rank)
    try:
        if config.resume:
            run.resume(config.resume)
        elif rank == 0:
            run.init_from(config.weights)
    except BaseException:
        run.discard()
        raise
    run.commit()
    return run


def _worker(config, net, uid, iters, rank, stop):
    """One rank, in its own spawned process. Ranks other than 0 ignore Ctrl-C
    (the terminal sends it to every process): they stop between steps when
    the parent sets `stop`; rank 0 snapshots and leaves with 130."""
    if rank != 0:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    gpus = config.gpus
    caffe.set_device(gpus[rank])
    caffe.set_mode_gpu()
    caffe.set_solver_count(len(gpus))
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)
    try:
        run = open_rank(config, net, rank)
        nccl = caffe.NCCL(run.solver, uid)
        nccl.bcast()
        run.solver.add_callback(nccl)
        if run.param.layer_wise_reduce:
            run.solver.net.after_backward(nccl)
        if rank == 0:
            run.train(iters, config.score_every)
        else:
            for _ in range(iters):
                if stop.is_set():
                    break
                run.solver.step(1)
    except TrainingDiverged as exc:
        print(f"solvers.solve (rank {rank}): error: {exc}", flush=True)
        hard_exit(3)
    except KeyboardInterrupt:
        hard_exit(EXIT_INTERRUPTED)
    except USER_ERRORS as exc:
        print(f"solvers.solve (rank {rank}): error: {one_line(exc)}", file=sys.stderr, flush=True)
        hard_exit(EXIT_USAGE)


# ---- the ranks' processes ------------------------------------------------------
STOP_GRACE_S = 10.0     # after a rank failed: how long the others get to stop on the flag
KILL_GRACE_S = 5.0      # after SIGTERM: how long before SIGKILL


def start_ranks(target, args, count):
    """`count` processes running target(*args, rank, stop), started with the
    spawn method: a forked child would inherit the parent's CUDA state
    (cudaGetDeviceCount, NCCL's uid), and CUDA does not survive fork. The
    arguments are pickled. Returns (processes, the shared stop event)."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, rank, stop), name=f"rank-{rank}")
             for rank in range(count)]
    for p in procs:
        p.start()
    return procs, stop


def describe_exit(code):
    """'exited with status 2' / 'died by signal SIGABRT'."""
    if code is not None and code < 0:
        try:
            return f"died by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"died by signal {-code}"
    return f"exited with status {code}"


def exit_status(code):
    """A rank's exit code as this process's status: a signal N is 128 + N."""
    return 128 - code if code < 0 else code


def supervise(procs, stop, log=print, grace=STOP_GRACE_S, kill_grace=KILL_GRACE_S, poll=0.5):
    """Wait for every rank. The first that fails (a non-zero status, or death
    by a signal: a negative exitcode) sets `stop`, the others get `grace`
    seconds to leave, then SIGTERM, then SIGKILL: a rank blocked in an NCCL
    collective whose peer is gone never returns by itself. Ctrl-C here sets
    `stop` (rank 0 snapshots on its own Ctrl-C); a second one stops every
    rank at once. Returns 0 when every rank exited 0, else the first
    failure's status (128 + N for signal N; 130 when interrupted)."""
    pending = {p.sentinel: (rank, p) for rank, p in enumerate(procs)}
    failure, deadline, terminated = None, None, False
    interrupts = []

    def on_sigint(*_):
        interrupts.append(time.monotonic())
        stop.set()
    previous = signal.signal(signal.SIGINT, on_sigint) if is_main_thread() else None
    try:
        while pending:
            if len(interrupts) > 1 and deadline is None:
                deadline = time.monotonic()             # a second Ctrl-C: stop them now
            timeout = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            for sentinel in mp_connection.wait(list(pending), timeout):
                rank, p = pending.pop(sentinel)
                p.join()
                if p.exitcode != 0 and failure is None and not terminated:
                    failure = (rank, p.exitcode)
                    log(f"solvers.solve: rank {rank} {describe_exit(p.exitcode)}; stopping the "
                        f"other rank(s)")
                    stop.set()
                    deadline = time.monotonic() + grace
            if pending and deadline is not None and time.monotonic() >= deadline:
                for _, p in pending.values():
                    if terminated:
                        p.kill()
                    else:
                        p.terminate()
                deadline = time.monotonic() + kill_grace
                terminated = True
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if failure is not None:
        return exit_status(failure[1])
    return EXIT_INTERRUPTED if interrupts else 0


def is_main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


def train_multi_gpu(config, net):
    """Train `net` (a NetConfig) on the GPUs of `config.gpus`, one process
    each; the exit status."""
    if not hasattr(caffe, "NCCL"):
        raise UserError("--gpus needs pycaffe built with NCCL (USE_NCCL): build it with "
                         "`make install CUDA=1` (CUDA and NCCL) or use the Docker image "
                         "(make docker-build); the CPU build has no multi-GPU support")
    check_gpus_exist(config.gpus)
    if not config.resume:
        check_weights(net.model, config.weights)
    iters = iterations_for(config, net.model)
    uid = caffe.NCCL.new_uid()
    procs, stop = start_ranks(_worker, (config, net, uid, iters), len(config.gpus))
    return supervise(procs, stop)
