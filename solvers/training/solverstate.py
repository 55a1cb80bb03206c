"""Reading and checking a .solverstate before Caffe restores it: Caffe
CHECK-fails (aborts the process) on a state that does not fit the net, so
every mismatch is found here first and raised as RunError naming the file."""
import os

import numpy as np

from netio import files
from netio.errors import NetIOError
from netio.files import blob_count, blob_proto_shape

from .errors import RunError

HISTORY_ROUNDS = {"Adam": 2, "AdaDelta": 2}   # history blobs per parameter blob, by solver type


def read_solverstate(path):
    """netio.files.read_solverstate, its errors as RunError naming --resume."""
    try:
        return files.read_solverstate(path)
    except NetIOError as exc:
        raise RunError(f"--resume: {exc}") from None


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
        count = blob_count(blob)
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
