"""Confusion-matrix mIoU against a direct pixel count."""
import re

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


def test_spread_is_the_sample_statistics_of_the_seeds_that_have_the_score():
    from stages.core.metrics import spread

    # 70, 72, 74: mean 72, squared deviations 4 + 0 + 4 over n - 1 = 2, so std 2; the None is a seed without the class
    assert spread([70.0, None, 72.0, 74.0]) == {"mean": 72.0, "std": 2.0, "min": 70.0, "max": 74.0}
    two = spread([1.0, 3.0])  # two seeds already have a spread: sqrt(((1 - 2)^2 + (3 - 2)^2) / 1)
    assert two["std"] == pytest.approx(np.sqrt(2.0)) and (two["min"], two["max"]) == (1.0, 3.0)
    assert spread([5.0, None]) == {"mean": 5.0, "std": None, "min": 5.0, "max": 5.0}  # one seed: no spread
    assert spread([None, None]) == {"mean": None, "std": None, "min": None, "max": None}


def test_welch_with_two_values_a_side_and_without_any_spread():
    from stages.core.metrics import welch

    # variances 0.5 / 2 on each side: se = sqrt(0.5), t = 2 / sqrt(0.5); df = 0.5^2 / (0.25^2 + 0.25^2) = 2
    w = welch([1.0, 2.0], [3.0, 4.0])
    assert w["diff"] == 2.0 and w["se"] == pytest.approx(np.sqrt(0.5))
    assert w["t"] == pytest.approx(2 / np.sqrt(0.5)) and w["df"] == pytest.approx(2.0)
    # equal values on both sides: the difference is known, t is not
    assert welch([1.0, 1.0], [2.0, 2.0]) == {"diff": 1.0, "se": 0.0, "t": None, "df": None}


def test_label_agreement_counts_tags_that_differ_from_the_mask_and_stops_on_masks_that_do():
    from types import SimpleNamespace

    from stages.core.metrics import LabelAgreement

    mask = np.array([[0, 2], [255, 2]], np.uint8)  # class 2 alone
    labels = {"a": [2], "b": [1], "c": [1, 2]}
    tags = LabelAgreement(SimpleNamespace(source="tags", labels=labels, num_classes=3))
    for image_id in ("a", "b", "c"):
        tags.add(image_id, mask)
    tags.add("a", mask, labels=[1])  # a CAM's keys stand in for the index's labels
    assert tags.result() == {"label_disagreement": {"source": "tags", "images": 4, "disagree": 3, "first": "b"}}
    agree = LabelAgreement(SimpleNamespace(source="xml", labels=labels, num_classes=3))
    agree.add("a", mask)
    assert agree.result() == {"label_disagreement": {"source": "xml", "images": 1, "disagree": 0, "first": None}}
    masks = LabelAgreement(SimpleNamespace(source="masks", labels=labels, num_classes=3))
    masks.add("a", mask)
    assert masks.result() == {}
    with pytest.raises(StageError, match=r"^b: image-level labels \[1\] disagree with its mask's classes \[2\]; rerun"):
        masks.add("b", mask)


def test_a_label_map_of_another_size_is_named_with_both_sizes(tiny_index, tmp_path):
    from stages.core.metrics import score_label_maps
    from stages.utils.io import save_label_png

    image_id = tiny_index.ids(tiny_index.layout.split_file("val"))[0]
    save_label_png(tmp_path / f"{image_id}.png", np.zeros((4, 5), np.uint8))
    message = f"{tmp_path / image_id}.png: label map is 5x4 but its image is 64x64"
    with pytest.raises(StageError, match=f"^{re.escape(message)}$"):
        score_label_maps(tiny_index, [image_id], tmp_path)


def test_a_scored_mask_is_checked_against_its_image_size_and_the_classes(tiny_index):
    import dataclasses

    from stages.core.metrics import scored_mask
    from stages.data.voc import read_mask

    image_id = next(i for i, labels in tiny_index.labels.items() if max(labels, default=0) > 1)
    path = tiny_index.mask_path(image_id)
    np.testing.assert_array_equal(scored_mask(tiny_index, image_id), read_mask(path))
    smaller = dataclasses.replace(tiny_index, sizes={**tiny_index.sizes, image_id: [10, 12]})
    with pytest.raises(StageError, match=f"^{re.escape(str(path))}: mask is 64x64 but its image is 12x10$"):
        scored_mask(smaller, image_id)
    one_class = dataclasses.replace(tiny_index, classes=tiny_index.classes[:1])  # the mask holds a class above 1
    with pytest.raises(StageError, match="outside 0..1 and 255"):
        scored_mask(one_class, image_id)


def test_scores_are_rounded_to_two_decimals_and_an_absent_class_warns_nothing():
    import warnings

    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1]], np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # class 2 is absent: its 0 / 0 is NaN by design, not a numerical accident
        s = score(confusion(pred, gt, 3), ["background", "a", "b"])
    assert s["miou"] == 58.33 and s["per_class"] == {"background": 50.0, "a": 66.67, "b": None}  # (1/2 + 2/3) / 2


def test_a_ground_truth_value_of_n_classes_is_out_of_range_too():
    with pytest.raises(StageError, match="label value >= 3"):
        confusion(np.array([0]), np.array([3]), 3)
    assert confusion(np.array([2]), np.array([2]), 3)[2, 2] == 1  # n - 1 is the last class


def test_an_image_the_index_has_no_labels_for_agrees_with_a_background_mask():
    from types import SimpleNamespace

    from stages.core.metrics import LabelAgreement

    tags = LabelAgreement(SimpleNamespace(source="tags", labels={}, num_classes=3))
    tags.add("unlisted", np.zeros((2, 2), np.uint8))  # no labels and no class in the mask: they agree
    assert tags.result()["label_disagreement"]["disagree"] == 0
