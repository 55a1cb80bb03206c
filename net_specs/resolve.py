"""From command-line words to (Model, Dataset): one place for every CLI.

`emit`, `solve`, `score` and `infer` all accept a model or template name
plus optional dataset overrides; this is how they are combined.
"""
from dataclasses import replace

from .datasets import custom_dataset, get_dataset
from .models import TEMPLATES, for_dataset, get_model


def parse_mean(text):
    """'B,G,R' -> three floats; anything else is a ValueError naming --mean."""
    try:
        mean = tuple(float(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(f"--mean must be three comma-separated numbers B,G,R, got {text!r}") from None
    if len(mean) != 3:
        raise ValueError(f"--mean must be three comma-separated numbers B,G,R, got {text!r}")
    return mean


def resolve(name, dataset=None, classes=None, mean=None, class_names=None, root=None):
    """(Model, Dataset) for `name` and the overrides; ValueError when they don't fit.

    A template (fcn8s, ...) or the `folder` dataset is custom data and needs
    `classes`; a published model keeps its dataset unless overridden.
    """
    model = get_model(name)
    names = tuple(n.strip() for n in class_names.split(",")) if isinstance(class_names, str) \
        else tuple(class_names or ())
    if classes is not None and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"--classes must be a positive integer, got {classes!r}")
    if names and classes is not None and len(names) != classes:
        raise ValueError(f"--class-names lists {len(names)} names for {classes} classes")
    dataset_name = dataset or ("folder" if name in TEMPLATES else model.dataset)
    if dataset_name == "folder":
        if classes is None:
            raise ValueError(f"{name} on a custom (folder) dataset needs --classes K (and --mean B,G,R)")
        base = get_dataset("folder")
        data = custom_dataset(classes, parse_mean(mean) if mean else base.mean, root,
                              class_names=names)
    else:
        data = get_dataset(dataset_name)
        if classes is not None:
            data = data.with_classes(classes, names)
        if mean:
            data = replace(data, mean=parse_mean(mean))
    if name in TEMPLATES:
        model = for_dataset(model, data.name)
    return model, data
