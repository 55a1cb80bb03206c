"""Fine-tuning to a new class count: keep everything a trained FCN learned
except the layers whose shape depends on the classes.

A released 21-class FCN fine-tuned on a 5-class dataset keeps its trunk,
fc6/fc7 and every other layer; the score layers (score_fr, score_pool4,
score_pool3, ...) start again as the reference initialises them (zero: the
net's own fillers, net_specs.heads.score_layer) and the upsampling
deconvolutions (upscore*) as bilinear interpolation for the new channel
count. Any other layer whose shape differs is refused: that is another
model, not another class count.
"""
from .bilinear import interp, upsampling_layers
from .errors import SurgeryError
from .transplant import COPIED, UNTOUCHED, LayerReport, format_report

CLASS_LAYER_PREFIXES = ("score", "upscore")
REINITIALISED = "reinitialised"


def _shapes(blobs):
    return tuple(tuple(b.data.shape) for b in blobs)


def reinit_score(src, dst, verbose=True):
    """Copy `src`'s (a netio.nets.Caffemodel or caffe.Net) parameters into
    the freshly built caffe.Net `dst`, leaving the class-dependent layers at
    their new initialisation; returns the report rows. Checked in full
    before anything is written."""
    rows = []
    for name, blobs in dst.params.items():
        target = _shapes(blobs)
        if name not in src.params:
            rows.append(LayerReport(None, name, UNTOUCHED, (), target))
            continue
        source = _shapes(src.params[name])
        if source == target:
            rows.append(LayerReport(name, name, COPIED, source, target))
        elif name.startswith(CLASS_LAYER_PREFIXES):
            rows.append(LayerReport(name, name, REINITIALISED, source, target))
        else:
            raise SurgeryError(f"layer {name!r} has shapes {source} in the weights but {target} "
                               "in the net: not a class-count change (weights of another model "
                               "or --width?)")
    if not any(r.status == COPIED for r in rows):
        raise SurgeryError("no layer of the weights file matches the net: weights of another model?")
    for r in rows:
        if r.status == COPIED:
            for s, d in zip(src.params[r.source], dst.params[r.target]):
                d.data[...] = s.data
    fresh = {r.target for r in rows if r.status != COPIED}
    interp(dst, [name for name in upsampling_layers(dst) if name in fresh])
    if verbose:
        print(format_report(rows))
    return rows
