"""Loading trained weights into a net without letting Caffe abort.

`net.copy_from` aborts the process on a caffemodel that does not fit; every
problem is found here first and raised as our own error naming the file.
"""
import sys

import numpy as np

from common.errors import UserError
from surgery.errors import SurgeryError
from surgery.io import check_weights_fit, read_weights, weight_layers


class WeightsError(UserError):
    """A caffemodel that parses but cannot serve this net."""


def load_weights(net, path, warn=True):
    """Copy a .caffemodel into `net` after checking it cannot make Caffe abort;
    returns the net's parameter layers the file does not cover."""
    param = read_weights(path)
    try:
        check_weights_fit(net, param, path)
    except SurgeryError as exc:
        raise WeightsError(f"{exc} (weights of another model or width?)") from None
    stored = {layer.name for layer in weight_layers(param) if layer.blobs}
    wanted = [name for name, layer in zip(net._layer_names, net.layers) if len(layer.blobs)]
    if not stored & set(wanted):
        raise WeightsError(f"{path}: no layer of the weights file matches the net "
                           "(weights of another model?)")
    missing = [name for name in wanted if name not in stored]
    if missing and warn:
        print(f"warning: {path} has no parameters for layer(s) {', '.join(missing)}; "
              "they keep their initial values", file=sys.stderr)
    net.copy_from(path)
    check_finite(net, path)
    return missing


def check_finite(net, path):
    """Weights with NaN or inf (a diverged run's snapshot) give NaN scores,
    whose argmax is class 0 everywhere: refused, naming the layers."""
    bad = [name for name, blobs in net.params.items()
           if not all(np.isfinite(b.data).all() for b in blobs)]
    if bad:
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise WeightsError(f"{path}: non-finite weights (NaN/inf) in layer(s) {shown}: a diverged "
                           "run's snapshot? (solvers.solve names the last finite one)")
