"""Segmentation scores from a confusion matrix: IoU = TP / (TP + FP + FN), 255 ignored."""
from __future__ import annotations

import numpy as np

from stages import StageError
from stages.data.voc import IGNORE


def confusion(pred: np.ndarray, gt: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts, rows = ground truth, columns = prediction; gt == 255 is skipped."""
    valid = gt != IGNORE
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if g.size and (g.max() >= n or p.max() >= n):
        raise StageError(f"label value >= {n} in prediction or ground truth")
    return np.bincount(n * g + p, minlength=n * n).reshape(n, n)


def iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU; NaN for classes absent from both ground truth and prediction."""
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def score(conf: np.ndarray, class_names: list[str]) -> dict:
    """mIoU and per-class IoU in percent (background first); absent classes are None."""
    values = iou(conf)
    per_class = {name: (None if np.isnan(v) else round(100 * float(v), 2)) for name, v in zip(class_names, values)}
    return {"miou": round(100 * float(np.nanmean(values)), 2), "per_class": per_class}


def spread(values: list[float | None]) -> dict:
    """Mean, sample standard deviation (n - 1; None for one value), min and max of a score over seeds.

    Seeds where the score is None (a class absent from the split) are left out; all None gives all None.
    """
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = float(np.std(present, ddof=1)) if len(present) > 1 else None
    return {"mean": float(np.mean(present)), "std": std, "min": min(present), "max": max(present)}
