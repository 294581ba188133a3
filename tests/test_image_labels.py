"""Image-level labels from masks, and clear errors on bad datasets."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import CLASSES, ROOT
from stages import StageError
from stages.convert_sbd import read_sbd_mask
from stages.data.index import load_index
from stages.data.voc import VOC_CLASSES, read_mask
from stages.image_labels import build_index
from stages.io import save_label_png, write_json


def test_labels_are_the_classes_in_each_mask(tiny_index):
    for image_id, labels in tiny_index.labels.items():
        mask = read_mask(tiny_index.layout.mask_path(image_id))
        assert labels == sorted(int(c) for c in np.unique(mask) if 0 < c < 255)


@pytest.fixture
def broken(tiny_voc, tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(tiny_voc, root)
    return root


def test_missing_root(tmp_path):
    with pytest.raises(StageError, match="JPEGImages: missing folder"):
        build_index(tmp_path / "nowhere", CLASSES, ["train"])


def test_corrupt_jpeg_is_named(broken):
    image_id = (broken / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    (broken / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(StageError, match=f"{image_id}.jpg: corrupt image"):
        build_index(broken, CLASSES, ["train"])


def test_listed_id_without_image(broken):
    with open(broken / "ImageSets/Segmentation/train.txt", "a") as f:
        f.write("ghost\n")
    with pytest.raises(StageError, match="ghost.jpg: image listed in the split file does not exist"):
        build_index(broken, CLASSES, ["train"])


def test_mask_of_the_wrong_size(broken):
    image_id = (broken / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    save_label_png(broken / "SegmentationClass" / f"{image_id}.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(StageError, match=f"{image_id}.png: mask is 12x10 but its image is 64x64"):
        build_index(broken, CLASSES, ["val"])


def test_label_values_out_of_range(broken):
    image_id = (broken / "ImageSets/Segmentation/val.txt").read_text().split()[0]
    save_label_png(broken / "SegmentationClass" / f"{image_id}.png", np.full((64, 64), 9, np.uint8))
    with pytest.raises(StageError, match=r"label values \[9\] outside 0..4 and 255"):
        build_index(broken, CLASSES, ["val"])


# The VOC 2012 + SBD layout: SegmentationClassAug for train_aug, a mask-less test split.
@pytest.fixture
def voc(tmp_path):
    from test_voc2012 import make_voc_fixture

    ids = make_voc_fixture(tmp_path)
    voc_root = tmp_path / "VOCdevkit/VOC2012"
    aug = voc_root / "SegmentationClassAug"
    for mat in (tmp_path / "benchmark_RELEASE/dataset/cls").glob("*.mat"):
        save_label_png(aug / f"{mat.stem}.png", read_sbd_mask(mat))
    return voc_root, ids, {"train_aug": tmp_path / "train_aug.txt"}


def test_voc_masks_win_and_sbd_masks_fill_in(voc):
    root, ids, lists = voc
    index, split_ids = build_index(root, list(VOC_CLASSES), ["train_aug", "val"], ["test"], lists=lists)
    assert split_ids["train_aug"] == ids["train_aug"] and split_ids["test"] == ids["test"]
    assert index.layout.mask_path(ids["train"][0]) == root / "SegmentationClass" / f"{ids['train'][0]}.png"
    assert index.layout.mask_path(ids["sbd"][0]) == root / "SegmentationClassAug" / f"{ids['sbd'][0]}.png"
    for image_id in ids["sbd"]:
        mask = read_mask(root / "SegmentationClassAug" / f"{image_id}.png")
        assert index.labels[image_id] == sorted(int(c) for c in np.unique(mask) if 0 < c < 255)
    assert index.unlabeled == frozenset(ids["test"]) and not set(ids["test"]) & index.labels.keys()


def test_index_round_trips_and_accepts_the_test_ids(voc, tmp_path):
    root, ids, lists = voc
    index, _ = build_index(root, list(VOC_CLASSES), ["train_aug"], ["test"], lists=lists)
    write_json(tmp_path / "image_labels.json", index.to_json())
    (tmp_path / "test.txt").write_text("\n".join(ids["test"]) + "\n")
    loaded = load_index(tmp_path / "image_labels.json")
    assert loaded.ids(tmp_path / "test.txt") == ids["test"]
    assert loaded.layout.mask_path(ids["sbd"][1]) == index.layout.mask_path(ids["sbd"][1])


def test_missing_train_aug_list_is_named(voc, tmp_path):
    root, _, _ = voc
    with pytest.raises(StageError, match=f"{tmp_path / 'elsewhere.txt'}: split list not found"):
        build_index(root, list(VOC_CLASSES), ["train_aug"], lists={"train_aug": tmp_path / "elsewhere.txt"})


def test_missing_aug_folder_is_named(voc, tmp_path):
    root, _, lists = voc
    with pytest.raises(StageError, match=f"{tmp_path / 'Aug'}: missing folder of SBD-converted masks"):
        build_index(root, list(VOC_CLASSES), ["train_aug"], aug_masks=tmp_path / "Aug", lists=lists)


def test_id_with_no_mask_anywhere_is_named(voc):
    root, ids, lists = voc
    (root / "SegmentationClassAug" / f"{ids['sbd'][2]}.png").unlink()
    with pytest.raises(StageError, match=f"SegmentationClassAug/{ids['sbd'][2]}.png: file not found"):
        build_index(root, list(VOC_CLASSES), ["train_aug"], lists=lists)


def test_test_id_without_image_is_named(voc):
    root, ids, lists = voc
    (root / "JPEGImages" / f"{ids['test'][1]}.jpg").unlink()
    with pytest.raises(StageError, match=f"JPEGImages/{ids['test'][1]}.jpg: image listed in the split file does not exist"):
        build_index(root, list(VOC_CLASSES), ["val"], ["test"])


def test_truncated_jpeg_is_named(voc):
    root, ids, _ = voc
    path = root / "JPEGImages" / f"{ids['val'][0]}.jpg"
    path.write_bytes(path.read_bytes()[:200])  # a valid header, the pixels cut off
    with pytest.raises(StageError, match=f"{ids['val'][0]}.jpg: corrupt image"):
        build_index(root, list(VOC_CLASSES), ["val"])


def test_cli_error_is_one_line_and_writes_nothing(voc, tmp_path):
    root, ids, _ = voc
    save_label_png(root / "SegmentationClass" / f"{ids['val'][1]}.png", np.full((64, 64), 21, np.uint8))
    proc = subprocess.run([sys.executable, "-m", "stages.image_labels", "--root", str(root), "--classes", ",".join(VOC_CLASSES),
                           "--splits", "val", "--unlabeled", "test", "--out", str(tmp_path / "labels")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    mask = root / "SegmentationClass" / f"{ids['val'][1]}.png"
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {mask}: ")
    assert not (tmp_path / "labels").exists()
