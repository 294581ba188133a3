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
