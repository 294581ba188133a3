"""The generated dataset: VOC layout, valid masks, determinism, objects with parts."""
import hashlib

import cv2
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


def test_the_schemas_defaults_of_the_part_options_leave_the_data_as_it_was(tmp_path, tiny_voc):
    """body_saturation [140, 255] and part_scale null, as the schema fills them in: the same bytes as without them."""
    make_dataset(tmp_path / "a", CLASSES, {**TINY, "body_saturation": [140, 255], "part_scale": None, "part_shape": "disc"},
                 seed=0)
    assert digest(tmp_path / "a") == digest(tiny_voc)


def saturation_and_hue(rgb) -> tuple[int, int]:
    h, s, _ = cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2HSV)[0, 0]
    return int(s), int(h)


def test_a_part_lies_inside_its_body_at_the_size_asked():
    from stages.data.synthetic import part_of

    body = np.zeros((96, 96), np.uint8)
    cv2.circle(body, (48, 48), 30, 1, -1)
    for seed in range(5):
        part = part_of(body, 48.0, 48.0, 30.0, (0.3, 0.3), "disc", np.random.default_rng(seed))
        assert part.any() and not (part & (1 - body)).any()
        assert 0.3 ** 2 * 0.6 < part.sum() / body.sum() < 0.3 ** 2 * 1.3  # an ellipse of radius 0.3 r, axes 0.75-1


def test_parts_take_their_class_hue_saturated_while_bodies_take_body_saturation():
    from stages.data.synthetic import object_colour, part_colour

    rng = np.random.default_rng(0)
    for c in range(4):
        s, h = saturation_and_hue(part_colour(c, 4, rng))
        assert s >= 215 and min(abs(h - 45 * c), 180 - abs(h - 45 * c)) <= 9
        s, _ = saturation_and_hue(object_colour(c, 4, {"p_class_colour": 1.0, "body_saturation": [40, 40]}, rng))
        assert 30 <= s <= 50


def test_with_parts_each_object_holds_a_strongly_coloured_part_and_the_mask_is_the_whole_object(tmp_path):
    cfg = {**TINY, "max_objects": 1, "p_cooccur": 0.0, "max_clutter": 0, "body_saturation": [20, 40], "part_scale": [0.35, 0.4]}
    make_dataset(tmp_path / "p", CLASSES, cfg, seed=0)
    layout = layout_of(tmp_path / "p")
    for image_id in layout.ids("train"):
        img = read_image(layout.images / f"{image_id}.jpg")
        mask = read_mask(layout.mask_path(image_id), img.shape, len(CLASSES))
        sat = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1]
        obj = mask > 0
        strong = obj & (sat > 150)
        assert 0.03 < strong.sum() / obj.sum() < 0.4  # the part: a small share of the object ...
        assert np.median(sat[obj & ~strong]) < 100  # ... on a body of faint colour
        assert set(np.unique(mask)) == {0, int(mask.max())}  # the part is labelled as its object


def test_an_unknown_part_shape_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="data.generate.part_shape: 'blob' is not a generator shape"):
        make_dataset(tmp_path / "x", CLASSES, {**TINY, "part_scale": [0.2, 0.3], "part_shape": "blob"}, seed=0)
