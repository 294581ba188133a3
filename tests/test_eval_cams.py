"""CAM evaluation: the threshold sweep scores every image and matches a direct count."""
import re

import numpy as np
import pytest

from stages import StageError
from stages.core.metrics import PROTOCOLS, confusion, score, score_label_maps
from stages.data.voc import read_mask
from stages.eval_cams import eval_cams, thresholds
from stages.utils.io import save_label_png, save_npz

SWEEP = {"thresholds": {"start": 0.05, "stop": 0.8, "step": 0.05}}


def test_thresholds_span_the_sweep():
    ts = thresholds(SWEEP)
    assert len(ts) == 16 and ts[0] == 0.05 and ts[-1] == 0.8


def test_perfect_cams_score_100_at_every_threshold(tiny_index, tmp_path):
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    for image_id in ids:
        mask = read_mask(tiny_index.layout.mask_path(image_id))
        keys = np.asarray(tiny_index.labels[image_id])
        cam = np.stack([(mask == k).astype(np.float16) for k in keys])
        save_npz(tmp_path / f"{image_id}.npz", keys=keys, cam=cam, cam_s4=cam[:, ::4, ::4])
    result = eval_cams(tiny_index, ids, tmp_path, SWEEP)
    assert result["images"] == len(ids)
    assert all(row["miou"] == 100.0 for row in result["sweep"])


def direct_miou(cams: list[tuple[np.ndarray, np.ndarray]], masks: list[np.ndarray], threshold: float, n: int) -> float:
    """The reference's CAM labels (a constant background map at ``threshold`` before the class maps, the argmax:
    a pixel is its best class only where that class's map is above the threshold), scored by counting pixels:
    per class, the pixels predicted and labelled with it over those predicted or labelled with it, outside the
    masks' 255 outline; the mean over the classes that occur."""
    inter, union = np.zeros(n), np.zeros(n)
    for (keys, cam), gt in zip(cams, masks):
        pred = np.where(cam.max(0) > threshold, keys[cam.argmax(0)], 0)
        scored = gt != 255
        for c in range(n):
            inter[c] += np.sum((pred == c) & (gt == c) & scored)
            union[c] += np.sum(((pred == c) | (gt == c)) & scored)
    return 100 * float(np.mean(inter[union > 0] / union[union > 0]))


def test_the_sweep_on_graded_cams_is_a_direct_count_at_each_threshold_and_keeps_the_best(tiny_index, tmp_path):
    """CAMs of graded values: each object's map between 0.45 and 1 inside it, noise up to 0.55 elsewhere, so that
    low thresholds give background pixels to the classes, high ones objects to the background, and every threshold
    scores differently. Fails if the background channel is not the threshold, a score is taken at another threshold
    than its row's, or the best row is not the highest."""
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    rng = np.random.default_rng(0)
    cams, masks = [], []
    for image_id in ids:
        mask = read_mask(tiny_index.layout.mask_path(image_id))
        keys = np.asarray(tiny_index.labels[image_id])
        cam = np.stack([np.where(mask == k, rng.uniform(0.45, 1.0, mask.shape), rng.uniform(0, 0.55, mask.shape))
                        for k in keys]).astype(np.float16)  # as make_cams stores them
        save_npz(tmp_path / f"{image_id}.npz", keys=keys, cam=cam, cam_s4=cam[:, ::4, ::4])
        cams.append((keys, cam.astype(np.float32)))
        masks.append(mask)
    result = eval_cams(tiny_index, ids, tmp_path, SWEEP)
    n = tiny_index.num_classes + 1
    expected = {t: direct_miou(cams, masks, t, n) for t in thresholds(SWEEP)}
    assert [row["threshold"] for row in result["sweep"]] == list(expected)
    assert [row["miou"] for row in result["sweep"]] == pytest.approx(list(expected.values()), abs=0.006)
    assert len({round(v, 2) for v in expected.values()}) == len(expected)  # every threshold scores differently
    best = max(expected, key=expected.get)
    assert 0.05 < best < 0.8 and result["best"]["threshold"] == best
    assert result["best"]["miou"] == pytest.approx(expected[best], abs=0.006)


def test_label_maps_score_as_a_direct_count(tiny_index, tmp_path):
    ids = tiny_index.ids(tiny_index.layout.split_file("val"))
    rng = np.random.default_rng(0)
    n = tiny_index.num_classes + 1
    conf = np.zeros((n, n), np.int64)
    for image_id in ids:
        gt = read_mask(tiny_index.layout.mask_path(image_id))
        pred = np.where(rng.random(gt.shape) < 0.8, gt, 0).astype(np.uint8)
        save_label_png(tmp_path / f"{image_id}.png", pred)
        conf += confusion(pred, gt, n)
    result = score_label_maps(tiny_index, ids, tmp_path)
    direct = score(conf, tiny_index.names_with_background)
    assert result["miou"] == pytest.approx(direct["miou"]) and result["images"] == len(ids)
    assert 0 < result["miou"] < 100


def test_image_labels_that_disagree_with_the_mask_are_named(tiny_index, tmp_path):
    image_id = tiny_index.ids(tiny_index.layout.split_file("train"))[0]
    present = tiny_index.labels[image_id]
    wrong = [c for c in range(1, 5) if c not in present][:1]
    cam = np.zeros((1, 64, 64), np.float16)
    save_npz(tmp_path / f"{image_id}.npz", keys=np.asarray(wrong), cam=cam, cam_s4=cam[:, ::4, ::4])
    message = f"{image_id}: image-level labels {wrong} disagree with its mask's classes {present}"
    with pytest.raises(StageError, match=re.escape(message)):
        eval_cams(tiny_index, [image_id], tmp_path, SWEEP)


def test_the_reference_protocol_scores_the_1st_and_9th_image_of_a_list_of_12_only(tiny_index, tmp_path):
    # a list of 12: the train and val images, in that order
    ids = [*tiny_index.ids(tiny_index.layout.split_file("train")), *tiny_index.ids(tiny_index.layout.split_file("val"))]
    scored = ids[::8]
    assert 1 < len(scored) < len(ids)
    for image_id in scored:  # the other images have no CAM and no prediction: reading one would fail
        mask = read_mask(tiny_index.layout.mask_path(image_id))
        keys = np.asarray(tiny_index.labels[image_id])
        cam = np.stack([(mask == k).astype(np.float16) for k in keys])
        save_npz(tmp_path / f"{image_id}.npz", keys=keys, cam=cam, cam_s4=cam[:, ::4, ::4])
        save_label_png(tmp_path / f"{image_id}.png", mask)
    cams = eval_cams(tiny_index, ids, tmp_path, SWEEP, PROTOCOLS["reference"])
    maps = score_label_maps(tiny_index, ids, tmp_path, PROTOCOLS["reference"])
    for result in (cams, maps):
        assert (result["images"], result["protocol"]) == (len(scored), "reference")
    # perfect predictions: 100 for each class present, 0 in the mean for each absent one, as the reference averages
    present = {int(c) for i in scored for c in np.unique(read_mask(tiny_index.layout.mask_path(i))) if c != 255}
    n = tiny_index.num_classes + 1
    assert maps["miou"] == cams["best"]["miou"] == pytest.approx(100 * len(present) / n, abs=0.01)
