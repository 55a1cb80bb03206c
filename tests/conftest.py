"""Shared pytest setup: Caffe quiet and on the CPU, repo root importable."""
import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("GLOG_minloglevel", "2")
# the label-check cache (layers.labelcheck) of this test session, not the
# user's; removed when the session ends (a folder per session piled up in /tmp)
if "FCN_CACHE_DIR" not in os.environ:
    os.environ["FCN_CACHE_DIR"] = tempfile.mkdtemp(prefix="fcn-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FCN_CACHE_DIR"], ignore_errors=True)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import caffe  # noqa: E402

caffe.set_mode_cpu()
