"""Training, scoring and inference, one sub-package per job: training/,
scoring/, inference/ (CLIs: solvers.solve, solvers.score, solvers.infer,
solvers.eval_published)."""
from common.caffe_log import quiet_caffe

quiet_caffe()
