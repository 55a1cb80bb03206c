"""Command line: list the models, emit their prototxts (examples in USAGE)."""
import argparse
import os
import sys

from common.atomic import write_files
from common.cli import add_model_args, run_cli
from common.errors import InputError
from common.outputs import check_dir

from .build import build, PHASES
from .classifiers import CLASSIFIERS, classifier
from .datasets import DATASETS
from .models import MODELS, TEMPLATES
from .registry import lookup
from .resolve import resolve_args

DESCRIPTION = "List the models; emit their train/val/deploy prototxts."
USAGE = """examples:
    python -m net_specs list
    python -m net_specs emit voc-fcn8s [--out DIR]
    python -m net_specs emit --all [--out models]
    python -m net_specs emit fcn8s --dataset folder --classes 5 --mean 104,117,123 --root PATH --out DIR
"""


def model_files(name, args):
    """{filename: prototxt text} for one model and the CLI's overrides."""
    if lookup(name)[0] == "classifier":
        return {"deploy.prototxt": str(classifier(name, width=args.width))}
    net = resolve_args(args, name)
    return {f"{phase}.prototxt": str(build(net, phase)) for phase in PHASES}


def cmd_list(_args):
    rows = [(name, m.description + ("" if m.published else "  [beyond the papers]"))
            for name, m in MODELS.items()]
    rows += [(name, desc) for name, desc in CLASSIFIERS.items()]
    rows += [(name, f"template: {m.description} for --dataset (custom data)") for name, m in TEMPLATES.items()]
    width = max(len(r[0]) for r in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    print(f"\ndatasets: {', '.join(sorted(DATASETS))}")


def cmd_emit(args):
    if args.all == bool(args.model):
        raise InputError("give one MODEL or --all")
    names = list(MODELS) + list(CLASSIFIERS) if args.all else [args.model]
    plans = {}
    for name in names:
        out = os.path.join(args.out or "models", name) if args.all or not args.out else args.out
        check_dir(out)
        plans[out] = model_files(name, args)        # build everything before writing anything
    for out, files in plans.items():
        write_files(out, files)
        print(f"wrote {', '.join(sorted(files))} to {out}/")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m net_specs", description=DESCRIPTION,
                                     epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every model with a one-line description")
    emit = sub.add_parser("emit", help="write train/val/deploy prototxts")
    emit.add_argument("model", nargs="?", help="model or template name (see `list`)")
    emit.add_argument("--all", action="store_true", help="every model, into OUT/<model>/")
    emit.add_argument("--out", help="output directory (default models/<model>)")
    add_model_args(emit, dataset=True, class_names=False)
    args = parser.parse_args(argv)
    return run_cli("net_specs", cmd_list if args.cmd == "list" else cmd_emit, args)


if __name__ == "__main__":
    sys.exit(main())
