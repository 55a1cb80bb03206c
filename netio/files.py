"""Reading Caffe's files with the protobuf classes Caffe itself uses, so that
a missing, empty, truncated or corrupt file raises NetIOError naming it
instead of a glog CHECK killing the process."""
import os

import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from .errors import NetIOError


def read_prototxt(path):
    """Parse a text NetParameter, naming the file on any failure."""
    if not os.path.isfile(path):
        raise NetIOError(f"prototxt not found: {path}")
    param = caffe_pb2.NetParameter()
    try:
        with open(path) as f:
            text_format.Merge(f.read(), param)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise NetIOError(f"cannot parse prototxt {path}: {e}") from None
    return param


def read_caffemodel(path):
    """Parse a binary caffemodel; missing, empty, truncated or corrupt files raise."""
    if not os.path.isfile(path):
        raise NetIOError(f"caffemodel not found: {path}")
    if path.endswith(".h5"):
        raise NetIOError(f"{path}: HDF5 weights are not supported, use a binary .caffemodel")
    data = _read_bytes(path)
    param = caffe_pb2.NetParameter()
    try:
        param.ParseFromString(data)
    except Exception as e:  # DecodeError; upb raises its own subclasses
        raise NetIOError(f"caffemodel {path} is truncated or corrupt "
                         f"({len(data)} bytes; protobuf: {e})") from None
    if not any(layer.blobs for layer in weight_layers(param)):
        raise NetIOError(f"caffemodel {path} ({len(data)} bytes) holds no learned "
                         f"parameters: empty, truncated or not a caffemodel")
    return param


def read_solverstate(path):
    """Parse a binary .solverstate: present, not HDF5, readable, naming its
    weights (learned_net) and a non-negative iteration."""
    if not os.path.isfile(path):
        raise NetIOError(f"no solver state at {path}")
    if path.endswith(".h5"):
        raise NetIOError(f"{path}: HDF5 solver states are not supported; expected a "
                         "binary .solverstate")
    data = _read_bytes(path)
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and its upb variants
        raise NetIOError(f"{path} ({len(data)} bytes) is not a readable .solverstate: "
                         f"truncated or corrupt ({exc})") from None
    if not state.learned_net:
        raise NetIOError(f"{path} ({len(data)} bytes) names no weights (learned_net): "
                         "empty, truncated or not a .solverstate")
    if state.iter < 0 or state.current_step < 0:
        raise NetIOError(f"{path} has iteration {state.iter}; expected a count >= 0")
    return state


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def weight_layers(param):
    """Layers of a NetParameter in either format (V1 `layers` as in VGG16's file)."""
    return list(param.layer) + list(param.layers)


def is_legacy(blob):
    """Whether a BlobProto carries the legacy (num, channels, height, width) shape."""
    return any(blob.HasField(f) for f in ("num", "channels", "height", "width"))


def blob_proto_shape(blob):
    """A BlobProto's shape; legacy (num, channels, height, width) when set."""
    if is_legacy(blob):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def blob_values(blob):
    """A BlobProto's values as a flat float32 array (float or double storage)."""
    return np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)


def blob_count(blob):
    """How many values a BlobProto stores."""
    return len(blob.data) or len(blob.double_data)
