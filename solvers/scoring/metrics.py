"""Segmentation metrics as the FCN papers report them.

From a confusion matrix `hist` (rows ground truth, columns prediction)
accumulated over the whole evaluation set -- never averaged per image:

    pixel accuracy      sum_i n_ii / sum_ij n_ij
    mean accuracy       mean_i  n_ii / t_i                      (t_i = sum_j n_ij)
    mean IU             mean_i  n_ii / (t_i + sum_j n_ji - n_ii)
    frequency weighted  sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii) / sum_k t_k

A class with no ground-truth pixels has no accuracy; a class absent from
both ground truth and prediction has no IU. Both are nan per class and
left out of the means (the reference's nanmean), computed here without
0/0 warnings. A class absent from the ground truth but predicted somewhere
has IU 0 and, by the reference's convention, counts in mean IU: the
reference's class mean runs over classes in ground truth or prediction.

`present_only=True` restricts the class means to classes that occur in the
ground truth of the evaluation set (Head.present_only in the dataset
records: the SIFT Flow semantic head, several of whose 33 classes never
occur in its test split). Pixels whose label is outside [0, n_classes) --
the ignore label 255 included -- are not counted at all.
"""
import numpy as np

METRIC_KEYS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
METRIC_NAMES = {"pixel_acc": "pixel accuracy", "mean_acc": "mean accuracy",
                "mean_iu": "mean IU", "fw_iu": "frequency weighted IU"}


def fast_hist(label, pred, n):
    """n x n confusion matrix (rows truth, columns prediction), int64.

    Pixels whose label is not in [0, n) -- 255, negatives, anything larger --
    are ignored. `label` and `pred` are arrays of the same size (any shape,
    any numeric dtype); predictions must lie in [0, n).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive class count, got {n}")
    label = np.asarray(label).ravel()
    pred = np.asarray(pred).ravel()
    if label.size != pred.size:
        raise ValueError(f"label and prediction differ in size: {label.size} vs {pred.size}")
    keep = (label >= 0) & (label < n)
    label = label[keep].astype(np.int64)
    pred = pred[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= n):
        raise ValueError(f"predictions must lie in [0, {n}), got values in "
                         f"[{pred.min()}, {pred.max()}]")
    pred = pred.astype(np.int64)
    return np.bincount(n * label + pred, minlength=n * n).reshape(n, n)


def _ratio(num, den):
    """num / den elementwise, nan where den == 0, without a warning."""
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean(values, mask):
    return float(values[mask].mean()) if mask.any() else float("nan")


def metrics(hist, present_only=False):
    """The papers' metrics of a confusion matrix, as a dict.

    Keys: pixel_acc, mean_acc, mean_iu, fw_iu (floats, nan when undefined,
    e.g. an empty matrix), per_class_iu and per_class_acc (lists of floats,
    nan for undefined classes), n_pixels, n_classes_counted (classes in the
    mean IU), present_only. With `present_only` the class means count only
    classes that occur in the ground truth (rows with pixels).
    """
    hist = np.asarray(hist, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"hist must be a square matrix, got shape {hist.shape}")
    total = hist.sum()
    diag = np.diag(hist)
    truth = hist.sum(1)
    predicted = hist.sum(0)
    union = truth + predicted - diag
    in_truth = truth > 0
    counted = in_truth if present_only else union > 0

    class_acc = _ratio(diag, truth)                 # nan: class not in the ground truth
    iu = _ratio(diag, union)                        # nan: class in neither
    pixel_acc = float(diag.sum() / total) if total > 0 else float("nan")
    if total > 0:
        freq = truth / total
        fw_iu = float((freq[in_truth] * iu[in_truth]).sum())
    else:
        fw_iu = float("nan")
    return {
        "pixel_acc": pixel_acc,
        "mean_acc": _mean(class_acc, in_truth),     # the same with or without present_only
        "mean_iu": _mean(iu, counted),
        "fw_iu": fw_iu,
        "per_class_iu": [float(x) for x in iu],
        "per_class_acc": [float(x) for x in class_acc],
        "n_pixels": int(total),
        "n_classes_counted": int(counted.sum()),
        "present_only": bool(present_only),
    }
