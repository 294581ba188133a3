"""Image-level labels from masks, and clear errors on bad datasets."""
import shutil

import numpy as np
import pytest

from conftest import CLASSES
from stages import StageError
from stages.data.voc import read_mask
from stages.image_labels import build_index
from stages.io import save_label_png


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
