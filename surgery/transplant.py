"""Copy parameters between nets by layer name: the convolutionalisation step.

A fully connected layer and the convolution that replaces it hold the same
numbers in a different shape (VGG16 fc6 4096x25088 = 4096x512x7x7), so
blobs whose element counts agree are reshaped ("coerced"); blobs whose counts
differ are refused, never truncated. The whole plan is checked before any
blob is written, so a refusal leaves the target untouched.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import SurgeryError

COPIED, COERCED, DROPPED, UNTOUCHED = "copied", "coerced", "dropped", "untouched"
STATUSES = (COPIED, COERCED, DROPPED, UNTOUCHED)


@dataclass(frozen=True)
class LayerReport:
    """What transplant did with one layer (source None: a target-only layer)."""
    source: Optional[str]
    target: Optional[str]
    status: str
    source_shapes: Tuple[tuple, ...] = ()
    target_shapes: Tuple[tuple, ...] = ()


def _shapes(blobs):
    return tuple(tuple(b.data.shape) for b in blobs)


def _plan_layer(name, src_blobs, dst_params, suffix):
    target = name + suffix
    src_shapes = _shapes(src_blobs)
    if target not in dst_params:
        return LayerReport(name, None, DROPPED, src_shapes)
    dst_shapes = _shapes(dst_params[target])
    if len(src_shapes) != len(dst_shapes):
        raise SurgeryError(f"transplant {name!r} -> {target!r}: source has {len(src_shapes)} "
                           f"blobs {src_shapes}, target has {len(dst_shapes)} {dst_shapes}")
    for j, (s, d) in enumerate(zip(src_shapes, dst_shapes)):
        if np.prod(s) != np.prod(d):
            raise SurgeryError(
                f"transplant {name!r} -> {target!r}: blob {j} has shape {s} "
                f"({int(np.prod(s))} values) in the source but {d} ({int(np.prod(d))} values) "
                f"in the target; refusing to truncate or pad")
    status = COPIED if src_shapes == dst_shapes else COERCED
    return LayerReport(name, target, status, src_shapes, dst_shapes)


def transplant(src_net, dst_net, suffix="", verbose=True):
    """Copy src_net's parameters into dst_net's layers named `name + suffix`.

    Returns one LayerReport per source layer (copied / coerced / dropped) and
    per target layer that received nothing (untouched), and prints them as a
    table unless verbose is False. Raises SurgeryError, before writing
    anything, when a matched layer's blob counts or element counts differ.
    """
    src_params, dst_params = src_net.params, dst_net.params
    rows = [_plan_layer(name, blobs, dst_params, suffix) for name, blobs in src_params.items()]
    filled = {r.target for r in rows if r.target}
    rows += [LayerReport(None, name, UNTOUCHED, (), _shapes(blobs))
             for name, blobs in dst_params.items() if name not in filled]
    for r in rows:
        if r.status in (COPIED, COERCED):
            for s, d in zip(src_params[r.source], dst_params[r.target]):
                d.data[...] = s.data.reshape(d.data.shape)
    if verbose:
        print(format_report(rows))
    return rows


def _fmt_shapes(shapes):
    return " ".join("x".join(map(str, s)) for s in shapes) or "-"


def format_report(rows):
    """A fixed-width table of transplant's rows, with a count per status."""
    header = ("source", "target", "status", "source shapes", "target shapes")
    cells = [header] + [(r.source or "-", r.target or "-", r.status,
                         _fmt_shapes(r.source_shapes), _fmt_shapes(r.target_shapes))
                        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    statuses = dict.fromkeys([COPIED, COERCED, DROPPED, UNTOUCHED] + [r.status for r in rows])
    counts = {s: sum(r.status == s for r in rows) for s in statuses}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n or s in STATUSES))
    return "\n".join(lines)
