"""Reading and checking a .solverstate before Caffe restores it: Caffe
CHECK-fails (aborts the process) on a state that does not fit the net, so
every mismatch is found here first and raised as RunError naming the file."""
import os

import numpy as np
from caffe.proto import caffe_pb2

from surgery.io import blob_proto_shape

from .errors import RunError

HISTORY_ROUNDS = {"Adam": 2, "AdaDelta": 2}   # history blobs per parameter blob, by solver type


def read_solverstate(path):
    """Parse a binary .solverstate, naming the file on any failure."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no solver state at {path}")
    if path.endswith(".h5"):
        raise RunError(f"--resume: {path}: HDF5 solver states are not supported; expected a "
                       "binary .solverstate")
    with open(path, "rb") as f:
        data = f.read()
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and its upb variants
        raise RunError(f"--resume: {path} ({len(data)} bytes) is not a readable .solverstate: "
                       f"truncated or corrupt ({exc})") from None
    if not state.learned_net:
        raise RunError(f"--resume: {path} ({len(data)} bytes) names no weights (learned_net): "
                       "empty, truncated or not a .solverstate")
    if state.iter < 0 or state.current_step < 0:
        raise RunError(f"--resume: {path} has iteration {state.iter}; expected a count >= 0")
    return state


def solverstate_iter(path):
    """The iteration a .solverstate was taken at."""
    return read_solverstate(path).iter


def check_solverstate(path, net, model_name="the model", solver_type="SGD"):
    """The parsed state of `path` once it is known to fit `net` (a train net):
    one history blob per learnable parameter blob, in order, with the same
    shapes -- two rounds of them for Adam and AdaDelta, which keep two
    moments (Caffe CHECK-fails, exit 134, on a wrong count)."""
    state = read_solverstate(path)
    expected = [(name, j, blob.data.shape) for name, blobs in net.params.items()
                for j, blob in enumerate(blobs)]
    expected *= HISTORY_ROUNDS.get(solver_type, 1)
    hint = "a state of another model or width, or a truncated file"
    if len(state.history) != len(expected):
        raise RunError(f"--resume: {path} holds {len(state.history)} history blobs; {model_name} "
                       f"at this width has {len(expected)} learnable blobs ({hint})")
    for blob, (name, j, shape) in zip(state.history, expected):
        got = blob_proto_shape(blob)
        count = len(blob.data) or len(blob.double_data)
        if tuple(got) != tuple(shape) or count != int(np.prod(shape)):
            raise RunError(f"--resume: {path}: the history of layer {name!r} blob {j} has shape "
                           f"{tuple(got)} ({count} values); expected {tuple(shape)} ({hint})")
    return state


def state_weights(path, state):
    """The caffemodel a state's weights are in: the file named like its
    learned_net beside the state when there is one, else learned_net itself."""
    stored = state.learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.basename(stored))
    if os.path.isfile(beside):
        return beside
    if os.path.isfile(stored):
        return stored
    raise RunError(f"--resume: the weights of {path} are missing: expected {beside} "
                   f"(beside the state) or {stored} (the path it names)")
