"""Every emitted prototxt is byte-identical to what commit 7cafdb5 emitted.

The table tests/data/prototxt_sha256.json holds the SHA-256 of each
model's train/val/deploy prototxt (full width and 1/16), of each template
on custom data and on VOC, and of each ILSVRC classifier, as 7cafdb5 wrote
them. A refactoring of net_specs must leave every one unchanged; a change
that means to alter a net regenerates the table (`python -m
tests.test_prototxt_identity > tests/data/prototxt_sha256.json`) and says
why in its commit.
"""
import hashlib
import json
import os

import pytest

from net_specs.build import PHASES, build
from net_specs.classifiers import CLASSIFIERS, classifier
from net_specs.models import MODELS, TEMPLATES
from net_specs.resolve import resolve

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "prototxt_sha256.json")


def emitted():
    """{case: prototxt text} over every model, template and classifier."""
    out = {}
    for name in MODELS:
        for width in (1.0, 1 / 16):
            model, data = resolve(name)
            for phase in PHASES:
                out[f"{name} {phase} width={width:g}"] = str(build(model, phase, dataset=data, width=width))
    for name in TEMPLATES:
        model, data = resolve(name, "folder", 5, "104,117,123", root="/data/mine")
        for phase in PHASES:
            out[f"{name} on folder/5 {phase}"] = str(build(model, phase, dataset=data, root="/data/mine"))
        model, data = resolve(name, "voc")
        out[f"{name} on voc deploy"] = str(build(model, "deploy", dataset=data))
    for name in CLASSIFIERS:
        for width in (1.0, 1 / 16):
            out[f"{name} deploy width={width:g}"] = str(classifier(name, width=width))
    return out


def digests():
    return {case: hashlib.sha256(text.encode()).hexdigest() for case, text in emitted().items()}


@pytest.fixture(scope="module")
def table():
    with open(TABLE) as f:
        return json.load(f)


def test_every_prototxt_is_byte_identical_to_the_table(table):
    got = digests()
    assert sorted(got) == sorted(table), "models, templates or classifiers were added or removed"
    changed = sorted(case for case in table if got[case] != table[case])
    assert changed == []


def test_the_table_covers_every_model_phase_and_classifier(table):
    assert len(table) == len(MODELS) * 2 * len(PHASES) + len(TEMPLATES) * 4 + len(CLASSIFIERS) * 2


if __name__ == "__main__":
    print(json.dumps(digests(), indent=1, sort_keys=True))
