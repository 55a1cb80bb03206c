"""Data-parallel training on several GPUs through Caffe's NCCL support.

One process per GPU (as BVLC's python/train.py does): each builds the same
solver, rank 0 loads the initial weights and NCCL broadcasts them, gradients
are all-reduced after every backward. Each rank reads the training split in
its own seeded order; rank 0 alone scores, snapshots and writes the run.
Needs pycaffe built with NCCL (the Docker image); the CPU build has none.
"""
import multiprocessing as mp
import os

import caffe

from .solve import SEED, Run, check_weights, hard_exit, TrainingDiverged


def _worker(args, model, dataset, uid, rank, gpus, iters):
    caffe.set_device(gpus[rank])
    caffe.set_mode_gpu()
    caffe.set_solver_count(len(gpus))
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)
    out = args.out or os.path.join("runs", model.name)
    run = Run(model, out if rank == 0 else os.path.join(out, "ranks", str(rank)),
              width=args.width, dataset=dataset, root=args.root,
              snapshot_every=args.snapshot_every, seed=SEED + rank,
              solver_overrides={"base_lr": args.base_lr} if args.base_lr is not None else None)
    if rank == 0:
        if args.resume:
            run.resume(args.resume)
        else:
            run.init_from(args.weights)
    nccl = caffe.NCCL(run.solver, uid)
    nccl.bcast()
    run.solver.add_callback(nccl)
    if run.param.layer_wise_reduce:
        run.solver.net.after_backward(nccl)
    try:
        if rank == 0:
            run.train(iters, args.score_every)
        else:
            for _ in range(iters):
                run.solver.step(1)
    except TrainingDiverged as exc:
        print(f"solvers.solve (rank {rank}): error: {exc}", flush=True)
        hard_exit(3)


def train_multi_gpu(args, model, dataset):
    """Run `args.iters` iterations on the GPUs of `args.gpus` ("0,1,2")."""
    if not hasattr(caffe, "NCCL"):
        raise ValueError("--gpus needs pycaffe built with NCCL (USE_NCCL): use the Docker "
                         "image (make docker-build); the CPU build has no multi-GPU support")
    gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    if not gpus:
        raise ValueError(f"--gpus must list GPU ids like 0,1, got {args.gpus!r}")
    if not args.resume:
        check_weights(model, args.weights)
    iters = args.iters if args.iters is not None else model.solver.max_iter
    uid = caffe.NCCL.new_uid()
    procs = [mp.Process(target=_worker, args=(args, model, dataset, uid, rank, gpus, iters))
             for rank in range(len(gpus))]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return max(p.exitcode or 0 for p in procs)
