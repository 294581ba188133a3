"""The generated dataset: VOC layout, valid masks, determinism."""
import hashlib

import numpy as np
import pytest
from conftest import CLASSES, TINY, layout_of, run_stage

from stages import StageError
from stages.data.voc import read_image, read_mask
from stages.make_dataset import make_dataset


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_dataset_has_the_voc_layout_and_valid_masks(tiny_voc):
    layout = layout_of(tiny_voc)
    layout.check()
    train, val = layout.ids("train"), layout.ids("val")
    assert len(train) == 8 and len(val) == 4 and not set(train) & set(val)
    for image_id in train + val:
        img = read_image(layout.images / f"{image_id}.jpg")
        mask = read_mask(layout.mask_path(image_id), img.shape, len(CLASSES))
        assert img.shape == (64, 64, 3)
        assert mask.max() >= 1  # every image holds an object
        fg = (mask > 0).mean()
        assert 0.03 < fg < 0.9


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, tiny_voc):
    make_dataset(tmp_path / "a", CLASSES, TINY, seed=0)
    make_dataset(tmp_path / "b", CLASSES, TINY, seed=1)
    assert digest(tmp_path / "a") == digest(tiny_voc)
    assert digest(tmp_path / "b") != digest(tiny_voc)


def test_the_stage_takes_its_seed_from_the_generate_section(tmp_path, tiny_voc):
    """data.generate.seed, not the run's seeds: every seed of a run shares one dataset."""
    for seed in (0, 1):
        proc = run_stage("make_dataset", output={"root": tmp_path / str(seed)},
                         params={"generate": {**TINY, "seed": seed}, "classes": CLASSES})
        assert proc.returncode == 0, proc.stderr
    assert digest(tmp_path / "0") == digest(tiny_voc) != digest(tmp_path / "1")


def test_unknown_shape_class_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="'dog'"):
        make_dataset(tmp_path / "x", ["disc", "dog"], TINY, seed=0)
    assert not (tmp_path / "x").exists()


def test_classes_cooccur(tiny_index):
    counts = np.array([len(v) for v in tiny_index.labels.values()])
    assert counts.min() >= 1 and counts.max() >= 2


def test_objects_that_cannot_be_placed_are_a_stage_error_and_write_nothing(tmp_path):
    # no object can cover 90% of the image, so every one of the tries fails
    with pytest.raises(StageError, match="^config data.generate: could not place objects"):
        make_dataset(tmp_path / "x", CLASSES, {**TINY, "min_visible": 0.9}, seed=0)
    assert not (tmp_path / "x").exists()
