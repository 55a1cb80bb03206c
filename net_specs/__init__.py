"""Prototxt generation for every FCN model family, from one table.

    from net_specs import build, MODELS
    proto = build("voc-fcn8s", "train")   # caffe_pb2.NetParameter
"""
from common.caffe_log import quiet_caffe

quiet_caffe()

from .build import build, PHASES  # noqa: F401, E402
from .classifiers import CLASSIFIERS, classifier  # noqa: F401, E402
from .datasets import DATASETS, get_dataset, custom_dataset  # noqa: F401, E402
from .models import MODELS, TEMPLATES, get_model  # noqa: F401, E402
from .netconfig import NetConfig  # noqa: F401, E402
