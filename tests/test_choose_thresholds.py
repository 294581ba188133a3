"""Rules choose_affinity_thresholds and choose_pseudo_thresholds (stages/ops/thresholds.py): per-class thresholds
the stages apply, the criteria on inputs whose answer is known, the fallback of a rare class, the tables' lines."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from conftest import ROOT
from pipeline.config import SCHEMA, ConfigError, check_config, merge

from stages.affinity_labels import affinity_label
from stages.core.metrics import iou
from stages.core.runtime import make_runtime
from stages.ops.cam import cam_to_label, threshold_argmax
from stages.ops.thresholds import (
    PUBLISHED,
    Curves,
    TooFewImages,
    beta_score,
    by_class_id,
    candidates,
    choose,
    chosen_config,
    confident_pair,
    knee,
    measure,
    otsu,
    per_class,
    sample_ids,
)
from stages.pseudo_labels import pseudo_label
from stages.report import describe


def changed(text: str) -> dict:
    """The micro config with the YAML ``text`` merged in."""
    return merge(yaml.safe_load((ROOT / "config/micro.yaml").read_text()), yaml.safe_load(text))


CFG = check_config(changed("thresholds: auto"), SCHEMA)["choose_thresholds"]
NO_CRF = {"iterations": 0, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 50, "srgb": 5, "compat": 10}}
rng = np.random.default_rng(0)


# ---- thresholds per class, as the stages apply them


def test_one_threshold_per_map_equal_to_a_number_gives_its_labels_exactly():
    cam = rng.random((3, 17, 19)).astype(np.float32)
    for t in (0.05, 0.35, 0.5, 0.95):
        assert np.array_equal(threshold_argmax(cam, np.full(3, t, np.float32)), threshold_argmax(cam, t))


def test_a_threshold_per_map_compares_each_map_with_its_own():
    """Pixel 0: map 1 at 0.5 is below its 0.6, map 2 at 0.3 above its 0.2: class 2. Pixel 1: both above theirs,
    map 1 by 0.9 / 0.6 = 1.5 times, map 2 by 0.25 / 0.2 = 1.25: class 1. With map 2's at 0.4, pixel 0 is background."""
    cam = np.array([[[0.5, 0.9]], [[0.3, 0.25]]], np.float32)
    assert threshold_argmax(cam, np.array([0.6, 0.2])).tolist() == [[2, 1]]
    assert threshold_argmax(cam, np.array([0.6, 0.4])).tolist() == [[0, 1]]


def test_per_class_values_reach_each_map_by_its_class_id():
    values = by_class_id({"b": 0.2, "d": 0.7}, ["a", "b", "c", "d"], default=0.4)
    assert values == [0.4, 0.2, 0.4, 0.7]
    assert per_class(values, [4, 2]).tolist() == pytest.approx([0.7, 0.2])
    assert per_class(0.35, [4, 2]) == 0.35


def test_a_thresholds_file_replaces_the_sections_values_and_nothing_else():
    cfg = {"fg_threshold": 0.75, "bg_threshold": 0.35, "crf": NO_CRF}
    chosen = {"values": {"affinity_labels": {"fg_threshold": {"x": 0.6, "y": 0.8}, "bg_threshold": {"x": 0.3, "y": 0.4}},
                         "random_walk": {"beta": 20}}}
    assert chosen_config(cfg, chosen, "affinity_labels", ["x", "y"]) == {"fg_threshold": [0.6, 0.8],
                                                                        "bg_threshold": [0.3, 0.4], "crf": NO_CRF}
    assert chosen_config({"beta": 10, "radius": 5}, chosen, "random_walk", ["x", "y"]) == {"beta": 20, "radius": 5}
    assert chosen_config(cfg, None, "affinity_labels", ["x", "y"]) is cfg


def test_the_label_stages_apply_each_class_its_own_threshold():
    """Two classes, each map a ramp 0..1 along x: class 1 (threshold 0.3) claims x >= 0.3, class 2 (0.8) only
    x >= 0.8 where it beats class 1's scaled map; the per-class labels equal the labels computed pixel by pixel."""
    ramp = np.tile(np.linspace(0, 1, 11, dtype=np.float32), (4, 1))
    cam = np.stack([ramp * 0.9, ramp])
    img = np.zeros((4, 11, 3), np.uint8)
    t = [0.3, 0.8]
    label = pseudo_label(img, cam, [1, 3], {"threshold": [t[0], 0.5, t[1]], "crf": NO_CRF})
    expect = np.where(np.maximum(cam[0] / t[0], cam[1] / t[1]) <= 1, 0, np.where(cam[0] / t[0] >= cam[1] / t[1], 1, 3))
    assert np.array_equal(label, expect)
    aff = affinity_label(img, cam, [1, 3], {"fg_threshold": [0.9, 0.0, 0.95], "bg_threshold": [0.3, 0.0, 0.8],
                                            "crf": NO_CRF})
    fg = cam_to_label(cam, [1, 3], np.array([0.9, 0.95]))
    bg = cam_to_label(cam, [1, 3], np.array([0.3, 0.8]))
    assert np.array_equal(aff, np.where(fg > 0, fg, np.where(bg == 0, 0, 255)))


# ---- the criteria


def test_the_knee_is_the_last_threshold_before_the_curve_rises():
    ts = np.round(np.arange(0.05, 1.0, 0.05), 2)
    curve = np.where(ts <= 0.55, 0.3, 0.3 + (ts - 0.55))  # flat at 0.3 up to 0.55, then rising to 0.7
    assert knee(curve, ts, tolerance=0.1, min_rise=0.02) == 0.55
    # a tolerance of half the rise (0.2) reaches 0.75, where the curve is 0.5
    assert knee(curve, ts, tolerance=0.5, min_rise=0.02) == 0.75
    assert knee(np.full(len(ts), 0.4), ts, 0.1, 0.02) is None  # flat: nothing to read


def test_otsu_equals_opencvs_on_the_same_values():
    """OpenCV's Otsu on the values as 8-bit levels 0..99 (one per bin): its threshold k puts levels <= k below, as
    ours puts the bins up to its upper edge (k + 1) / 100."""
    values = np.concatenate([rng.normal(0.25, 0.07, 4000), rng.normal(0.7, 0.1, 2000)]).clip(0, 0.999)
    levels = np.floor(values * 100).astype(np.uint8)
    k, _ = cv2.threshold(levels.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    hist = np.bincount(levels, minlength=100)
    assert otsu(hist) == pytest.approx((k + 1) / 100)
    assert 0.35 < otsu(hist) < 0.6
    assert otsu(np.zeros(100)) is None


class ObjectClassifier(nn.Module):
    """A classifier whose one class's score is the share of the object's pixels left unerased: logit 8 (s - 0.5),
    constant over its map. It sees the object through the normalised image: an erased pixel is 0 in every channel."""

    def __init__(self, obj: np.ndarray):
        super().__init__()
        self.register_buffer("obj", torch.from_numpy(obj))

    def forward(self, x):
        left = ((x.abs().sum(1) > 0) & self.obj).float().sum((1, 2)) / self.obj.sum()
        return (8 * (left - 0.5))[:, None, None, None].expand(-1, 1, 2, 2)


def disc_sample(radius: int = 6, size: int = 32):
    """A bright image, its disc object of ``radius`` and a map falling linearly from 1 at the centre to 0 at 16 px:
    the disc's edge is at map value 1 - radius / 16."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    obj = r < radius
    cam = np.clip(1 - r / 16, 0, 1).astype(np.float32)[None]
    return np.full((size, size, 3), 200, np.uint8), cam, obj


def test_the_deletion_knee_finds_the_objects_edge():
    """The erased region holds the whole disc (the score at its floor) while the threshold is below the map's value
    at the edge, 1 - 6/16 = 0.625; above it part of the disc is left and the score rises: with a tolerance of 1% of
    the rise the knee is the last candidate below 0.625."""
    img, cam, obj = disc_sample()
    rt = make_runtime("cpu", precision="fp32")
    curves = measure(Curves(candidates(CFG), 1), [(img, cam, [1], None)], ObjectClassifier(obj), rt)
    choice = choose(curves, ["disc"], "deletion", {**CFG, "min_images": 1, "tolerance": 0.01}, "test", "published")
    assert choice.t_star == {"disc": 0.6}
    # the area erased at each candidate is the share of the image where the map reaches it
    assert curves.area[:, 0] == pytest.approx([(cam[0] > t).mean() for t in curves.thresholds])


def test_masks_choose_the_threshold_of_the_best_iou_counted_directly():
    img, cam, obj = disc_sample(radius=9)
    mask = obj.astype(np.uint8)
    curves = measure(Curves(candidates(CFG), 1), [(img, cam, [1], mask)])
    direct = [((cam[0] > t) & obj).sum() / ((cam[0] > t) | obj).sum() for t in curves.thresholds]
    choice = choose(curves, ["disc"], "masks", {**CFG, "min_images": 1}, "test", "published")
    assert choice.t_star == {"disc": float(curves.thresholds[int(np.argmax(direct))])}
    assert [iou(c)[1] for c in curves.conf] == pytest.approx(direct)
    assert beta_score(curves, choice, ["disc"], "masks") == pytest.approx(max(direct))


def test_the_affinity_labels_thresholds_bracket_the_cams_t():
    assert confident_pair(0.6, CFG) == (round(0.6 + 0.4 * CFG["confident"]["fg_share"], 4),
                                        round(0.6 * CFG["confident"]["bg_share"], 4))
    fg, bg = confident_pair(0.2, {"confident": {"fg_share": 0.25, "bg_share": 0.5}})
    assert (fg, bg) == (0.4, 0.1)  # the published pair, from a VOC-like t of 0.2


# ---- rare classes, bad input


def curves_with_images(counts):
    curves = Curves(candidates(CFG), len(counts))
    curves.images[:] = counts
    curves.histogram[:, 40] = 1
    curves.histogram[:, 80] = 1
    return curves


def test_auto_keeps_the_published_value_of_a_class_too_rare_to_measure_and_says_so():
    choice = choose(curves_with_images([12, 2, 0]), ["cat", "dog", "cow"], "otsu", CFG, "choose_pseudo_thresholds",
                    f"threshold {PUBLISHED['threshold']}")
    assert set(choice.t_star) == {"cat"}
    assert choice.classes["dog"] == {"images": 2, "source": "published"} and "cow" not in choice.classes
    assert choice.warnings == [f"choose_pseudo_thresholds: class 'dog' is in 2 images (choose_thresholds.min_images: "
                               f"{CFG['min_images']}): too rare to measure, it keeps the published threshold 0.35"]


def test_masks_stop_on_a_class_with_too_few_images_naming_it():
    curves = curves_with_images([12, 2])
    curves.conf[:, 1, 1] = 1  # cat is measured
    with pytest.raises(TooFewImages, match=r"^class 'dog' is in 2 of its images with masks, fewer than "
                                           r"choose_thresholds.min_images \(5\)$"):
        choose(curves, ["cat", "dog"], "masks", CFG, "x", "published")


@pytest.mark.parametrize("text, message", [
    ("thresholds: masks\nchoose_thresholds: {split: nosuch}",
     "config choose_thresholds.split: split 'nosuch' has no masks (data.mask_splits: ['train', 'val']); "
     "thresholds: masks needs one that has"),
    ("thresholds: sometimes", "config thresholds"),
    ("thresholds: auto\nchoose_thresholds: {candidates: {start: 0.9, stop: 0.1, step: 0.05}}",
     "config choose_thresholds.candidates.start (0.9) must be at most choose_thresholds.candidates.stop (0.1)"),
])
def test_bad_threshold_settings_stop_in_one_line_naming_the_key(text, message):
    with pytest.raises(ConfigError) as e:
        check_config(changed(text), SCHEMA)
    lines = str(e.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_masks_without_any_split_with_masks_stops_in_one_line():
    config = changed("thresholds: masks\ndata: {labels: tags, tags: tags.csv, mask_splits: []}")
    with pytest.raises(ConfigError, match="^config thresholds: masks: no split has masks"):
        check_config(config, SCHEMA)


def test_the_images_auto_measures_are_a_seeded_sample_in_their_order():
    ids = [f"{k:03d}" for k in range(50)]
    a = sample_ids(ids, 10, seed=0)
    assert a == sample_ids(ids, 10, seed=0) and a == sorted(a) and len(set(a)) == 10
    assert a != sample_ids(ids, 10, seed=1)
    assert sample_ids(ids, 80, seed=0) == ids


# ---- what the tables say


def test_the_tables_name_the_thresholds_used_and_how_they_were_chosen():
    given = {"fg_threshold": 0.75, "bg_threshold": 0.35, "beta": 32, "threshold": 0.45}
    assert describe(given, []) == ["- given in the config: affinity labels fg 0.75 / bg 0.35, random walk beta 32, "
                                   "pseudo labels threshold 0.45"]
    record = {"how": "auto", "criterion": "otsu", "split": None, "images": 200,
              "values": {"random_walk": {"beta": 20}, "pseudo_labels": {"threshold": {"cat": 0.5, "dog": 0.35}}},
              "classes": {"cat": {"source": "otsu"}, "dog": {"source": "published"}}}
    assert describe(given, [record]) == [
        "- random walk: beta 20 (auto, criterion otsu, on 200 training images, no mask read)",
        "- pseudo labels: threshold cat 0.5, dog 0.35 (auto, criterion otsu, on 200 training images, no mask read)",
        "  - published values kept for dog: too few images to measure"]


def test_without_masks_the_walk_that_outlines_each_class_in_less_area_scores_higher():
    """Two walks of the same disc: one tight (falling to 0 at the disc's edge), one that floods (falling to 0 at
    twice the radius). At each one's t* the flooding walk's region is larger, so it scores lower."""
    img, _, obj = disc_sample(radius=6)
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 16, xx - 16)
    scores = {}
    for name, reach in [("tight", 7.0), ("flooding", 14.0)]:
        maps = np.clip(1 - r / reach, 0, 1).astype(np.float32)[None]
        curves = measure(Curves(candidates(CFG), 1), [(img, maps, [1], None)] * 5)
        choice = choose(curves, ["disc"], "otsu", CFG, "test", "published")
        scores[name] = beta_score(curves, choice, ["disc"], "otsu")
        t = choice.t_star["disc"]
        assert scores[name] == pytest.approx(-(maps[0] > t).mean())
    assert scores["tight"] > scores["flooding"]
