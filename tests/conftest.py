"""Shared pytest setup: Caffe quiet and on the CPU, repo root importable."""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import caffe  # noqa: E402

caffe.set_mode_cpu()
