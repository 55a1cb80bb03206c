"""From command-line words to (Model, Dataset) and a NetConfig: one place for every CLI.

`emit`, `solve`, `score` and `infer` all accept a model or template name
plus optional dataset overrides; this is how they are combined.
"""
from dataclasses import replace

from common.cli import parse_mean
from common.errors import InputError

from .datasets import custom_dataset, get_dataset
from .models import TEMPLATES, for_dataset, get_model
from .netconfig import NetConfig


def resolve(name, dataset=None, classes=None, mean=None, class_names=None, root=None):
    """(Model, Dataset) for `name` and the overrides; ValueError when they don't fit.

    A template (fcn8s, ...) runs on any dataset; custom data (the `folder`
    dataset) needs `classes`. A published model keeps its own dataset: its
    name, class count, input variant and initialisation chain belong to it
    (the template of the same architecture retargets it).
    """
    model = get_model(name)
    names = tuple(n.strip() for n in class_names.split(",")) if isinstance(class_names, str) \
        else tuple(class_names or ())
    if names and classes is not None and len(names) != classes:
        raise InputError(f"--class-names lists {len(names)} names for {classes} classes")
    template = name in TEMPLATES
    if dataset and not template and dataset != model.dataset:
        raise InputError(f"{name} is the published {model.dataset} model; for --dataset {dataset} "
                         f"use a template (fcn32s, fcn16s, fcn8s, ...; see `python -m net_specs list`)")
    base = get_dataset(dataset or ("folder" if template else model.dataset))
    if base.custom:
        if classes is None:
            raise InputError(f"{name} on a custom ({base.name}) dataset needs --classes K "
                             "(and --mean B,G,R)")
        data = custom_dataset(classes, mean if mean else base.mean, root,
                              class_names=names)
    else:
        data = base
        if classes is not None:
            data = data.with_classes(classes, names)
        if mean:
            data = replace(data, mean=parse_mean(mean))
    model = for_dataset(model, data.name) if template else model
    data.input_variant(model.inputs)          # the dataset must offer the model's inputs
    return model, data


def resolve_args(args, name=None):
    """The NetConfig of args.model (or `name`) and the flags of
    common.cli.add_model_args (and solve's --workers / --queue-depth, score's
    --split): the one place where those flags become a record."""
    model, dataset = resolve(name or args.model, getattr(args, "dataset", None), args.classes,
                             args.mean, class_names=getattr(args, "class_names", None),
                             root=getattr(args, "root", None))
    net = NetConfig(model, dataset, width=getattr(args, "width", 1.0),
                    root=getattr(args, "root", None), workers=getattr(args, "workers", None),
                    queue_depth=getattr(args, "queue_depth", None))
    return net.with_val_split(getattr(args, "split", None))
