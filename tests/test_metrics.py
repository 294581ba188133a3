"""Confusion-matrix mIoU against a direct pixel count."""
import numpy as np
import pytest

from stages import StageError
from stages.core.metrics import PROTOCOLS, confusion, iou, score


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



def reference_miou(preds, gts, n):
    """The reference's evaluate.py, computed independently: images 0, 8, 16, ... of the list; per class
    TP / (T + P - TP + 1e-10) over every class (one absent everywhere counts 0); the mean of all of them."""
    tp, t, p = np.zeros(n), np.zeros(n), np.zeros(n)
    for pred, gt in list(zip(preds, gts))[::8]:
        valid = gt < 255
        for c in range(n):
            tp[c] += np.sum((pred == c) & (gt == c) & valid)
            t[c] += np.sum((gt == c) & valid)
            p[c] += np.sum((pred == c) & valid)
    return 100 * np.mean(tp / (t + p - tp + 1e-10))


def test_the_reference_protocol_scores_every_8th_image_and_counts_absent_classes_as_0():
    rng = np.random.default_rng(1)
    gts = [rng.choice([0, 1, 2, 255], (6, 7), p=[0.5, 0.3, 0.1, 0.1]).astype(np.uint8) for _ in range(19)]
    preds = [np.where(rng.random(g.shape) < 0.6, g, rng.integers(0, 3, g.shape)).astype(np.uint8) % 255 for g in gts]
    protocol = PROTOCOLS["reference"]
    ids = [f"{i:02d}" for i in range(19)]
    assert protocol.ids(ids) == ["00", "08", "16"] and PROTOCOLS["full"].ids(ids) == ids
    chosen = [int(i) for i in protocol.ids(ids)]
    conf = sum(confusion(preds[i], gts[i], 4) for i in chosen)  # class 3 appears nowhere
    s = score(conf, ["background", "a", "b", "c"], protocol)
    assert s["miou"] == pytest.approx(reference_miou(preds, gts, 4), abs=0.005)
    assert s["per_class"]["c"] is None
    full = score(conf, ["background", "a", "b", "c"])
    assert full["miou"] == pytest.approx(s["miou"] * 4 / 3, abs=0.01)  # the full protocol leaves class 3 out


def test_welch_agrees_with_scipys_unequal_variance_t_test():
    from scipy.stats import ttest_ind

    from stages.core.metrics import welch

    a, b = [67.2, 66.5, 67.9], [69.1, 70.4, 69.0, 71.2]
    w, ref = welch(a, b), ttest_ind(b, a, equal_var=False)
    assert w["diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert w["t"] == pytest.approx(ref.statistic) and w["df"] == pytest.approx(ref.df)
    assert w["se"] == pytest.approx(np.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 4))
    assert welch([1.0], [2.0, 3.0]) == {"diff": 1.5, "se": None, "t": None, "df": None}
