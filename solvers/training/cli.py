"""Train one FCN stage: prototxts -> solver -> initial weights -> SGD -> scores.

The run itself (what lands in runs/<model>/) is solvers.training.run.Run; this module
is its command line (examples: EXAMPLES). Exit status: 0 trained; 2 a bad flag, file, model or
.solverstate, or a bad image/label met mid-run or at the final scoring (one line on stderr, naming
the snapshot kept), or a run directory in use by another run; 3 the loss diverged or the weights
became non-finite (the last finite snapshot named); 130 interrupted by Ctrl-C, 143 by SIGTERM
(snapshot taken, one line saying how to resume). With --gpus, the first failing rank's status
(128 + N when it died by signal N); the other ranks are stopped.
"""
import argparse
import os
import sys

from common.cli import (add_device_args, add_model_args, int_at_least, positive_float,
                        run_cli, set_device, terminate_as_interrupt)
from common.outputs import check_dir
from layers.reader import MAX_QUEUE_DEPTH, MAX_WORKERS

from net_specs.resolve import resolve_args

from .run import Run, TrainingDiverged, check_weights, hard_exit, remaining_iterations

DESCRIPTION = "Train one FCN stage: prototxts, solver, initial weights, SGD, scores."
EXAMPLES = """examples:
    python -m solvers.solve voc-fcn32s --weights weights/VGG_ILSVRC_16_layers.caffemodel
    python -m solvers.solve voc-fcn16s --weights runs/voc-fcn32s/final.caffemodel
    python -m solvers.solve voc-fcn8s --resume runs/voc-fcn8s/snapshots/train_iter_4000.solverstate"""
EXIT_DIVERGED = 3


def main(argv=None):
    terminate_as_interrupt()        # SIGTERM cleans up and snapshots as Ctrl-C does
    parser = argparse.ArgumentParser(prog="python -m solvers.solve", description=DESCRIPTION,
                                     epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    add_device_args(parser, multi_gpu=True)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--weights", nargs="+",
                       help="initial caffemodel(s), one per model.init: the ImageNet classifier "
                            "(weights/VGG_ILSVRC_16_layers.caffemodel, from `make weights-vgg16`) "
                            "or the previous stage's final.caffemodel")
    start.add_argument("--resume", help="a .solverstate to continue from (its weights come with it)")
    parser.add_argument("--iters", type=int_at_least("--iters", 0),
                        help="iterations to run (default: what is left of the solver's max_iter)")
    parser.add_argument("--score-every", type=int_at_least("--score-every", 0), default=4000,
                        help="score on val every N iterations (0: only at the end)")
    parser.add_argument("--snapshot-every", type=int_at_least("--snapshot-every", 1), default=4000,
                        metavar="N", help="write a snapshot (.caffemodel + .solverstate, for "
                        "--resume) into RUN/snapshots/ every N iterations (default 4000); Ctrl-C "
                        "and SIGTERM also snapshot")
    parser.add_argument("--out", help="run directory (default runs/<model>); one run at a time "
                        "per directory")
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
    net = resolve_args(args)
    model = net.model
    out = args.out or os.path.join("runs", model.name)
    check_dir(out, [("--resume", args.resume)] + [("--weights", w) for w in args.weights or ()])
    args.out = out
    if args.gpus:
        from .multigpu import MultiGpuConfig, train_multi_gpu
        return train_multi_gpu(MultiGpuConfig.from_args(args, model.name), net)
    set_device(None if args.cpu else args.gpu)
    if not args.resume:
        check_weights(model, args.weights)
    overrides = {"base_lr": args.base_lr} if args.base_lr is not None else None
    run = Run.open(net, out_dir=args.out, snapshot_every=args.snapshot_every,
                   solver_overrides=overrides)
    try:
        if args.resume:
            run.resume(args.resume)
        else:
            run.init_from(args.weights)
        run.commit()                     # checks the room for snapshots first
    except BaseException:
        run.discard()                    # an existing run's files stay as they were
        raise
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
