"""Data-parallel training on several GPUs through Caffe's NCCL support.

One process per GPU (as BVLC's python/train.py does): each builds the same
solver, rank 0 loads the initial weights (or the resumed state) and NCCL
broadcasts them, gradients are all-reduced after every backward. Each rank
reads the training split in its own seeded order; rank 0 alone scores,
snapshots and writes the run. Every rank steps the same number of
iterations, fixed before the ranks start (a resumed run: what is left of
max_iter after the state's iteration, as single-GPU training does).
Needs pycaffe built with NCCL (the Docker image); the CPU build has none.
"""
import multiprocessing as mp
import os
from dataclasses import dataclass
from typing import Optional

import caffe

from .run import SEED, Run, TrainingDiverged, check_weights, hard_exit, remaining_iterations, \
    solverstate_iter


@dataclass(frozen=True)
class MultiGpuConfig:
    """What a worker needs of the command line, and nothing more."""
    gpus: tuple
    out: str
    width: float = 1.0
    root: Optional[str] = None
    weights: tuple = ()
    resume: Optional[str] = None
    iters: Optional[int] = None
    score_every: int = 4000
    snapshot_every: int = 4000
    base_lr: Optional[float] = None
    workers: Optional[int] = None
    queue_depth: Optional[int] = None

    @classmethod
    def from_args(cls, args, model_name=None):
        gpus = tuple(int(g) for g in parse_gpus(args.gpus))
        return cls(gpus=gpus, out=args.out or os.path.join("runs", model_name or args.model),
                   width=args.width, root=args.root, weights=tuple(args.weights or ()),
                   resume=args.resume, iters=args.iters, score_every=args.score_every,
                   snapshot_every=args.snapshot_every, base_lr=args.base_lr,
                   workers=args.workers, queue_depth=args.queue_depth)


def parse_gpus(text):
    """'0,1,2' -> [0, 1, 2]; a ValueError naming --gpus otherwise."""
    try:
        gpus = [int(g) for g in str(text).split(",") if g.strip()]
    except ValueError:
        gpus = []
    if not gpus or min(gpus) < 0:
        raise ValueError(f"--gpus must list GPU ids like 0,1, got {text!r}")
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus lists a GPU twice: {text!r}")
    return gpus


def check_gpus_exist(gpus):
    """Every listed GPU must exist before workers start: Caffe would abort in
    each worker process instead of saying which id is missing."""
    from common.cli import gpu_count
    available = gpu_count()
    missing = [g for g in gpus if g >= available]
    if missing:
        raise ValueError(f"--gpus {','.join(map(str, gpus))}: no GPU {missing[0]}: this machine "
                         f"has {available} usable CUDA device(s) (driver 580 or newer needed)")


def iterations_for(config, model):
    """The iterations every rank steps: --iters, else what is left of the
    solver's max_iter after the resumed state's iteration."""
    start = solverstate_iter(config.resume) if config.resume else 0
    return remaining_iterations(config.iters, model.solver.max_iter, start)


def make_run(config, model, dataset, rank):
    """Rank `rank`'s Run (rank 0 in the run directory, the others under ranks/)."""
    out = config.out if rank == 0 else os.path.join(config.out, "ranks", str(rank))
    overrides = {"base_lr": config.base_lr} if config.base_lr is not None else None
    return Run.open(model, out_dir=out, width=config.width, dataset=dataset, root=config.root,
                    snapshot_every=config.snapshot_every, seed=SEED + rank,
                    solver_overrides=overrides, workers=config.workers,
                    queue_depth=config.queue_depth)


def _worker(config, model, dataset, uid, rank, iters):
    gpus = config.gpus
    caffe.set_device(gpus[rank])
    caffe.set_mode_gpu()
    caffe.set_solver_count(len(gpus))
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)
    run = make_run(config, model, dataset, rank)
    if rank == 0:
        if config.resume:
            run.resume(config.resume)
        else:
            run.init_from(config.weights)
    run.commit()
    nccl = caffe.NCCL(run.solver, uid)
    nccl.bcast()
    run.solver.add_callback(nccl)
    if run.param.layer_wise_reduce:
        run.solver.net.after_backward(nccl)
    try:
        if rank == 0:
            run.train(iters, config.score_every)
        else:
            for _ in range(iters):
                run.solver.step(1)
    except TrainingDiverged as exc:
        print(f"solvers.solve (rank {rank}): error: {exc}", flush=True)
        hard_exit(3)


def train_multi_gpu(config, model, dataset):
    """Train on the GPUs of `config.gpus`, one process each; the exit status."""
    if not hasattr(caffe, "NCCL"):
        raise ValueError("--gpus needs pycaffe built with NCCL (USE_NCCL): use the Docker "
                         "image (make docker-build); the CPU build has no multi-GPU support")
    check_gpus_exist(config.gpus)
    if not config.resume:
        check_weights(model, config.weights)
    iters = iterations_for(config, model)
    uid = caffe.NCCL.new_uid()
    procs = [mp.Process(target=_worker, args=(config, model, dataset, uid, rank, iters))
             for rank in range(len(config.gpus))]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return max(p.exitcode or 0 for p in procs)
