"""The one lookup over every name the CLIs accept: published models,
templates for custom data and ILSVRC classifiers, each name in one table
only (two tables sharing a name would make a CLI pick one silently)."""
from common.errors import InputError

from .classifiers import CLASSIFIERS
from .models import MODELS, TEMPLATES

TABLES = (("model", MODELS), ("template", TEMPLATES), ("classifier", CLASSIFIERS))


def check_unique(tables=TABLES):
    """Refuse a name held by two tables."""
    seen = {}
    for kind, table in tables:
        for name in table:
            if name in seen:
                raise ValueError(f"{name!r} is both a {seen[name]} and a {kind}")
            seen[name] = kind


check_unique()


def known_names():
    """Every model, template and classifier name, table by table."""
    return [name for _, table in TABLES for name in table]


def lookup(name):
    """(kind, record) of `name`: "model" or "template" with its Model,
    "classifier" with its description; a ValueError naming the known ones."""
    for kind, table in TABLES:
        if name in table:
            return kind, table[name]
    raise InputError(f"unknown model {name!r}; known: {', '.join(known_names())}")
