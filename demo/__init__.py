"""The embedded end-to-end demo (`make demo`, `python -m demo`)."""
from common.caffe_log import quiet_caffe

quiet_caffe()
