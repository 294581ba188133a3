"""Confusion-matrix mIoU against a direct pixel count."""
import numpy as np
import pytest

from stages import StageError
from stages.core.metrics import confusion, iou, score


def direct_iou(pred, gt, c):
    valid = gt != 255
    inter = np.sum((pred == c) & (gt == c) & valid)
    union = np.sum(((pred == c) | (gt == c)) & valid)
    return inter / union if union else np.nan


def test_iou_matches_a_direct_count():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (50, 60)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 4, gt.shape)).astype(np.uint8)
    pred[pred == 255] = 0
    got = iou(confusion(pred, gt, 5))
    for c in range(4):
        assert got[c] == pytest.approx(direct_iou(pred, gt, c))
    assert np.isnan(got[4])  # class 4 appears nowhere


def test_score_reports_percent_and_skips_absent_classes():
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1]], np.uint8)
    s = score(confusion(pred, gt, 3), ["background", "a", "b"])
    # background: 1 / 2, a: 2 / 3
    assert s["per_class"] == {"background": 50.0, "a": 66.67, "b": None}
    assert s["miou"] == pytest.approx(100 * (0.5 + 2 / 3) / 2, abs=0.01)


def test_ignore_label_is_not_counted():
    gt = np.array([[255, 255, 1]], np.uint8)
    pred = np.array([[1, 1, 1]], np.uint8)
    assert confusion(pred, gt, 2).sum() == 1
    assert iou(confusion(pred, gt, 2))[1] == 1.0


def test_out_of_range_labels_raise():
    with pytest.raises(StageError, match="label value >= 3"):
        confusion(np.array([3]), np.array([0]), 3)

