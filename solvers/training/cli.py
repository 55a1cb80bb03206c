"""Train one FCN stage: prototxts -> solver -> initial weights -> SGD -> scores.

The run itself (what lands in runs/<model>/) is solvers.training.run.Run; this module
is its command line (examples: EXAMPLES). Exit status: 0 trained; 2 a bad flag, file, model or
.solverstate, or a bad image/label met mid-run or at the final scoring (one line on stderr, naming
the snapshot kept); 3 the loss diverged; 130 interrupted (snapshot taken). With --gpus, the
first failing rank's status (128 + N when it died by signal N); the other ranks are stopped.
"""
import argparse
import sys

from common.cli import (add_device_args, add_model_args, int_at_least, positive_float,
                        run_cli, set_device)
from common.errors import InputError
from layers.reader import MAX_QUEUE_DEPTH, MAX_WORKERS

from net_specs.resolve import resolve_args

from .run import Run, TrainingDiverged, check_weights, hard_exit, remaining_iterations

DESCRIPTION = "Train one FCN stage: prototxts, solver, initial weights, SGD, scores."
EXAMPLES = """examples:
    python -m solvers.solve voc-fcn32s --weights weights/vgg16.caffemodel
    python -m solvers.solve voc-fcn16s --weights runs/voc-fcn32s/final.caffemodel
    python -m solvers.solve voc-fcn8s --resume runs/voc-fcn8s/snapshots/train_iter_4000.solverstate"""
EXIT_DIVERGED = 3


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m solvers.solve", description=DESCRIPTION,
                                     epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    add_device_args(parser, multi_gpu=True)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--weights", nargs="+", help="initial caffemodel(s), one per model.init")
    start.add_argument("--resume", help="a .solverstate to continue from (its weights come with it)")
    parser.add_argument("--iters", type=int_at_least("--iters", 0),
                        help="iterations to run (default: what is left of the solver's max_iter)")
    parser.add_argument("--score-every", type=int_at_least("--score-every", 0), default=4000,
                        help="score on val every N iterations (0: only at the end)")
    parser.add_argument("--snapshot-every", type=int_at_least("--snapshot-every", 1), default=4000)
    parser.add_argument("--out", help="run directory (default runs/<model>)")
    add_model_args(parser, dataset=True, class_names=False)
    parser.add_argument("--base-lr", type=positive_float("--base-lr"),
                        help="override the model's base learning rate")
    parser.add_argument("--workers", type=int_between("--workers", 0, MAX_WORKERS), metavar="N",
                        help="data loader processes per data layer (0: one thread in the training "
                             "process; default: the data layer's, 1)")
    parser.add_argument("--queue-depth", type=int_between("--queue-depth", 1, MAX_QUEUE_DEPTH),
                        metavar="N", help="examples each loader process keeps ready (default: the "
                                          "data layer's, 4)")
    return run_cli("solvers.solve", solve_cli, parser.parse_args(argv))


def int_between(flag, low, high):
    """An argparse type: an integer in [low, high]."""
    at_least = int_at_least(flag, low)

    def parse(text):
        value = at_least(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"{flag} must be at most {high}, got {value}")
        return value
    return parse


def solve_cli(args):
    model, dataset = resolve_args(args)
    if args.gpus:
        from .multigpu import MultiGpuConfig, train_multi_gpu
        try:
            config = MultiGpuConfig.from_args(args, model.name)
            return train_multi_gpu(config, model, dataset)
        except ValueError as exc:
            # multigpu.py reports a bad --gpus (ids, no NCCL, no such GPU) as a
            # plain ValueError; once it raises InputError itself, this goes
            raise InputError(str(exc)) from None
    set_device(None if args.cpu else args.gpu)
    if not args.resume:
        check_weights(model, args.weights)
    overrides = {"base_lr": args.base_lr} if args.base_lr is not None else None
    run = Run.open(model, out_dir=args.out, width=args.width, dataset=dataset, root=args.root,
                   snapshot_every=args.snapshot_every, solver_overrides=overrides,
                   workers=args.workers, queue_depth=args.queue_depth)
    try:
        if args.resume:
            run.resume(args.resume)
        else:
            run.init_from(args.weights)
    except BaseException:
        run.discard()                    # an existing run's files stay as they were
        raise
    run.commit()
    iters = remaining_iterations(args.iters, run.param.max_iter, run.solver.iter)
    try:
        final = run.train(iters, args.score_every)
    except TrainingDiverged as exc:
        print(f"solvers.solve: error: {exc}", file=sys.stderr)
        hard_exit(EXIT_DIVERGED)
    print(f"[{args.model}] done: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
