"""Segmentation scores from a confusion matrix: IoU = TP / (TP + FP + FN), 255 ignored, under one of two
scoring protocols (config ``eval.protocol``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages import StageError
from stages.data.voc import IGNORE, image_level_labels, read_mask, resize_labels
from stages.utils.io import read_label_png
from stages.utils.progress import track


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


@dataclass(frozen=True)
class Protocol:
    """Which images of a split are scored and how the mIoU averages: ``step``: every step-th image of the split's
    list, from the first; ``absent_as_zero``: a class absent from both masks and predictions counts 0 in the mean
    (else it is left out)."""

    name: str
    step: int
    absent_as_zero: bool
    description: str

    def ids(self, ids: list[str]) -> list[str]:
        return list(ids)[:: self.step]


PROTOCOLS = {
    "full": Protocol("full", 1, False, "every image of each split; mIoU over the classes present"),
    # the reference's evaluate.py: images 0, 8, 16, ... of the list, IoU = TP / (T + P - TP + 1e-10) for all classes
    "reference": Protocol("reference", 8, True, "as the reference's evaluate.py: every 8th image of each split's "
                          "list (the 1st, 9th, ...), mIoU over all classes, one absent from masks and predictions as 0"),
}


def score(conf: np.ndarray, class_names: list[str], protocol: Protocol = PROTOCOLS["full"]) -> dict:
    """mIoU and per-class IoU in percent (background first); absent classes are None (and count 0 in the mIoU under
    a protocol with ``absent_as_zero``)."""
    values = iou(conf)
    per_class = {name: (None if np.isnan(v) else round(100 * float(v), 2)) for name, v in zip(class_names, values)}
    miou = np.nan_to_num(values).mean() if protocol.absent_as_zero else np.nanmean(values)
    return {"miou": round(100 * float(miou), 2), "per_class": per_class}


def spread(values: list[float | None]) -> dict:
    """Mean, sample standard deviation (n - 1; None for one value), min and max of a score over seeds.

    Seeds where the score is None (a class absent from the split) are left out; all None gives all None.
    """
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = float(np.std(present, ddof=1)) if len(present) > 1 else None
    return {"mean": float(np.mean(present)), "std": std, "min": min(present), "max": max(present)}


def welch(a: list[float], b: list[float]) -> dict:
    """The difference of the means of ``b`` and ``a`` (b - a, say a variant's scores over seeds against the
    baseline's), its standard error sqrt(s_a^2 / n_a + s_b^2 / n_b), Welch's t (difference / standard error) and
    the Welch-Satterthwaite degrees of freedom. With fewer than two values on either side only the difference
    is known (the rest None); so is t where both sides have no spread at all."""
    diff = float(np.mean(b) - np.mean(a))
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "se": None, "t": None, "df": None}
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    if se == 0:
        return {"diff": diff, "se": 0.0, "t": None, "df": None}
    df = float((va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)))
    return {"diff": diff, "se": se, "t": diff / se, "df": df}


class LabelAgreement:
    """How often an image's image-level labels differ from the classes of its mask, counted where the mask is
    scored. Labels read from the masks themselves must agree: a difference means an index older than its masks
    (an error); labels from tags or XML may differ, and the tables say how often."""

    def __init__(self, index):
        self.index, self.images, self.differ = index, 0, []

    def add(self, image_id: str, mask: np.ndarray, labels: list[int] | None = None) -> None:
        """``labels``: the image-level labels a result was computed with (a CAM's keys); the index's by default."""
        in_mask = image_level_labels(mask, self.index.num_classes)
        labels = self.index.labels.get(image_id, []) if labels is None else list(labels)
        self.images += 1
        if labels == in_mask:
            return
        if self.index.source == "masks":
            raise StageError(f"{image_id}: image-level labels {labels} disagree with its mask's classes {in_mask}; "
                             "rerun image_labels (snakemake --forcerun image_labels)")
        self.differ.append(image_id)

    def result(self) -> dict:
        """``{}`` for labels from masks; else how many images were compared, how many differ, the first that does."""
        if self.index.source == "masks":
            return {}
        return {"label_disagreement": {"source": self.index.source, "images": self.images, "disagree": len(self.differ),
                                       "first": self.differ[0] if self.differ else None}}


def scored_mask(index, image_id: str) -> np.ndarray:
    """The mask of an image that is scored, checked (size, class values) as image_labels checks the ones it reads."""
    return read_mask(index.mask_path(image_id), index.size(image_id), index.num_classes)


def score_label_maps(index, ids, folder: Path, protocol: Protocol = PROTOCOLS["full"]) -> dict:
    """mIoU of the palette PNG label maps ``folder/<id>.png`` against the masks, of the images ``protocol`` scores. A
    label map may be at the image's own size or at the size the stages computed at (longest side data.max_side); it
    is scored at the own size."""
    ids = protocol.ids(ids)
    n = index.num_classes + 1
    conf = np.zeros((n, n), np.int64)
    agreement = LabelAgreement(index)
    for image_id in track(ids, "scoring"):
        path = Path(folder) / f"{image_id}.png"
        pred = read_label_png(path)
        if pred.shape not in (index.size(image_id), index.work_size(image_id)):
            h, w = index.size(image_id)
            raise StageError(f"{path}: label map is {pred.shape[1]}x{pred.shape[0]} but its image is {w}x{h}")
        gt = scored_mask(index, image_id)
        agreement.add(image_id, gt)
        conf += confusion(resize_labels(pred, gt.shape), gt, n)
    return {"images": len(ids), "protocol": protocol.name, **score(conf, index.names_with_background, protocol),
            **agreement.result()}
