"""Pseudo labels from random-walk maps, and the stage's palette PNGs."""
import numpy as np
from PIL import Image

from stages.pseudo_labels import pseudo_label, pseudo_labels
from stages.utils.io import read_label_png, save_npz

NO_CRF = {"iterations": 0, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 50, "srgb": 5, "compat": 10}}


def test_threshold_then_argmax_maps_to_class_ids():
    rw = np.array([[[0.9, 0.1, 0.3]], [[0.2, 0.5, 0.31]]], np.float32)
    label = pseudo_label(np.zeros((1, 3, 3), np.uint8), rw, [2, 4], {"threshold": 0.35, "crf": NO_CRF})
    assert label.tolist() == [[2, 4, 0]]


def test_stage_writes_voc_palette_pngs(tiny_index, tmp_path):
    ids = tiny_index.ids(tiny_index.layout.split_file("val"))
    for image_id in ids:
        keys = np.asarray(tiny_index.labels[image_id])
        rw = np.zeros((len(keys), 64, 64), np.float16)
        rw[:, 16:48, 16:48] = 1.0
        save_npz(tmp_path / "rw" / f"{image_id}.npz", keys=keys, rw=rw)
    crf = {**NO_CRF, "iterations": 1}
    pseudo_labels(tiny_index, ids, tmp_path / "rw", {"threshold": 0.35, "crf": crf}, tmp_path / "out", processes=2)
    for image_id in ids:
        with Image.open(tmp_path / "out" / f"{image_id}.png") as img:
            assert img.mode == "P" and img.getpalette()[3:6] == [128, 0, 0]
        label = read_label_png(tmp_path / "out" / f"{image_id}.png")
        assert set(np.unique(label)) <= {0, *tiny_index.labels[image_id]}
        assert label[0, 0] == 0 and label[32, 32] == tiny_index.labels[image_id][0]
