"""A run's metrics.jsonl: one JSON line per scoring (training loss, val loss,
the papers' metrics), set aside by a fresh run, cut back by a resumed one."""
import json
import os

import numpy as np

from common.atomic import atomic_write

from ..scoring.metrics import METRIC_KEYS


def metrics_entry(iteration, history, scores):
    """The metrics.jsonl entry of one scoring: the mean of the last 20
    training losses of `history` [(iteration, loss)], the val loss and the
    papers' metrics (the first head's at top level, every head under
    `heads` when there are several)."""
    recent = [l for it, l in history[-20:]]
    heads = {name: {k: v for k, v in m.items() if k != "hist"} for name, m in scores["heads"].items()}
    first = next(iter(heads.values()))
    entry = {"iteration": iteration,
             "loss": float(np.mean(recent)) if recent else None, "val_loss": scores["loss"]}
    entry.update({k: first[k] for k in METRIC_KEYS + ("per_class_iu",)})
    if len(heads) > 1:
        entry["heads"] = heads
    return entry, heads


def append_entry(path, entry):
    """Append one entry as a line of `path`."""
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_metrics(path):
    """The entries of a metrics.jsonl file ([] when there is none yet)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def set_aside(path):
    """Rename an existing `path` to the first free `path`.N (N = 1, 2, ...)."""
    if not os.path.exists(path):
        return None
    n = 1
    while os.path.exists(f"{path}.{n}"):
        n += 1
    os.replace(path, f"{path}.{n}")
    return f"{path}.{n}"


def keep_metrics_until(path, iteration):
    """Drop the metrics.jsonl lines after `iteration` (a resumed run redoes them)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line).get("iteration", 0) <= iteration]
    if len(kept) != len(lines):
        atomic_write(path, "".join(kept))
