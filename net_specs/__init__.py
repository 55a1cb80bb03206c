"""Prototxt generation for every FCN model family, from one table.

    from net_specs import build, MODELS
    proto = build("voc-fcn8s", "train")   # caffe_pb2.NetParameter
"""
import os

# Caffe logs every layer of every net it builds; keep warnings and errors.
os.environ.setdefault("GLOG_minloglevel", "2")

from .build import build, PHASES  # noqa: F401
from .classifiers import CLASSIFIERS, classifier  # noqa: F401
from .datasets import DATASETS, get_dataset, custom_dataset  # noqa: F401
from .models import MODELS, TEMPLATES, get_model  # noqa: F401
