"""Shared pytest setup: Caffe quiet and on the CPU, repo root importable."""
import os
import tempfile
import sys

os.environ.setdefault("GLOG_minloglevel", "2")
# the label-check cache (layers.labelcheck) of this test session, not the user's
os.environ.setdefault("FCN_CACHE_DIR", tempfile.mkdtemp(prefix="fcn-test-cache-"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import caffe  # noqa: E402

caffe.set_mode_cpu()
