"""Caffe's log level, set in one place: Caffe (glog) logs every layer of
every net it builds at INFO; the project keeps warnings and errors. glog
reads the level once, when Caffe is first loaded, so every entry point calls
`quiet_caffe()` before importing caffe; a level already in the environment
(GLOG_minloglevel=0 to see everything) is kept."""
import os

LEVEL = "2"     # glog: 0 INFO, 1 WARNING, 2 ERROR


def quiet_caffe():
    os.environ.setdefault("GLOG_minloglevel", LEVEL)
