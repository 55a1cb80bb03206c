import os

# Caffe logs every layer of every net it builds; keep warnings and errors.
os.environ.setdefault("GLOG_minloglevel", "2")
