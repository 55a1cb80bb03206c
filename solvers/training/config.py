"""Solver definitions: the papers' hyperparameters, written as solver.prototxt.

The numbers live in the model table (net_specs.models); this module only
turns a Model's record into Caffe's SolverParameter. Testing is driven from
Python (solvers.score), so Caffe's own test interval is effectively off.
"""
from caffe.proto import caffe_pb2

NEVER = 999999999


def solver_param(model, train_net, val_net, snapshot_prefix, val_size, snapshot_every=4000,
                 overrides=None, display=20):
    """A SolverParameter for `model` (a net_specs Model); `overrides` replaces
    Solver fields (the demo's narrow nets need other learning rates)."""
    s = model.solver
    values = dict(base_lr=s.base_lr, momentum=s.momentum, iter_size=s.iter_size,
                  max_iter=s.max_iter, weight_decay=s.weight_decay, lr_policy=s.lr_policy)
    values.update(overrides or {})
    unknown = set(values) - {f.name for f in caffe_pb2.SolverParameter.DESCRIPTOR.fields}
    if unknown:
        raise ValueError(f"unknown solver fields {sorted(unknown)}")
    p = caffe_pb2.SolverParameter(
        train_net=train_net, test_net=[val_net], test_iter=[max(1, val_size)],
        test_interval=NEVER, test_initialization=False, display=display, average_loss=display,
        snapshot=snapshot_every, snapshot_prefix=snapshot_prefix, **values)
    return p
