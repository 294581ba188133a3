"""COCO instances JSON -> palette masks, tags and lists (polygons, RLE, crowd as ignore, overlaps by area),
and config/coco2014.yaml's DAG on a COCO-layout fixture."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import layout_of
from PIL import Image
from pycocotools import mask as mask_utils

from stages import StageError
from stages.convert_coco import convert_coco
from stages.core.metrics import score_label_maps
from stages.image_labels import build_index
from stages.utils.io import read_label_png

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["person", "car", "dog"]  # COCO ids 1, 3, 18: class ids 1, 2, 3 in the order of COCO ids
CATEGORIES = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
H, W = 24, 32


def box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def polygon(y0, y1, x0, x1) -> list:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]  # covers rows y0..y1-1, columns x0..x1-1


def rle(m: np.ndarray, compressed: bool) -> dict:
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    if compressed:
        return {"size": r["size"], "counts": r["counts"].decode()}
    flat = m.flatten(order="F").astype(np.uint8)  # uncompressed RLE: run lengths, starting with zeros
    runs = np.diff(np.flatnonzero(np.diff(np.r_[2, flat, 2]))).tolist()
    return {"size": [H, W], "counts": runs if flat[0] == 0 else [0, *runs]}


def ann(k, image_id, category, segmentation, m, crowd=0):
    return {"id": k, "image_id": image_id, "category_id": category, "segmentation": segmentation,
            "area": float(m.sum()), "iscrowd": crowd, "bbox": [0, 0, 1, 1]}


def write_coco(root: Path) -> dict[str, np.ndarray]:
    """train2014 (3 images, one without objects) and val2014 (1 image); returns the expected masks by id."""
    big, small, far = box(2, 20, 2, 24), box(6, 12, 8, 16), box(14, 22, 26, 31)
    crowd = box(0, 4, 20, 32)
    # image 1: a large car (polygon), a small person on it (compressed RLE), a crowd of people at the top right
    # image 2: a dog (uncompressed RLE); image 3: only a crowd, so no object to learn from
    train_anns = [ann(1, 1, 3, polygon(2, 20, 2, 24), big), ann(2, 1, 1, rle(small, True), small),
                  ann(3, 1, 1, rle(crowd, False), crowd, crowd=1), ann(4, 2, 18, rle(far, False), far),
                  ann(5, 3, 1, rle(crowd, True), crowd, crowd=1)]
    val_anns = [ann(6, 4, 18, polygon(6, 12, 8, 16), small), ann(7, 4, 1, polygon(14, 22, 26, 31), far)]
    e1 = np.zeros((H, W), np.uint8)
    e1[big], e1[small] = 2, 1
    e1[crowd & ~big] = 255
    expected = {"train2014/COCO_train2014_000000000001": e1,
                "train2014/COCO_train2014_000000000002": np.where(far, 3, 0).astype(np.uint8),
                "val2014/COCO_val2014_000000000004": np.select([small, far], [3, 1], 0).astype(np.uint8)}
    rng = np.random.default_rng(0)
    for split, anns, image_ids in (("train2014", train_anns, [1, 2, 3]), ("val2014", val_anns, [4])):
        images = [{"id": i, "file_name": f"COCO_{split}_{i:012d}.jpg", "height": H, "width": W} for i in image_ids]
        for image in images:
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / split / image["file_name"])
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return expected


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    expected = write_coco(root)
    files = {"train": root / "annotations/instances_train2014.json", "val": root / "annotations/instances_val2014.json"}
    return root, files, expected


def test_masks_resolve_overlaps_by_area_and_ignore_crowds(coco, tmp_path):
    root, files, expected = coco
    assert convert_coco(files, CLASSES, tmp_path / "out") == {"train": 2, "val": 1}
    for image_id, mask in expected.items():
        np.testing.assert_array_equal(read_label_png(tmp_path / "out/masks" / f"{image_id}.png"), mask)
    assert (tmp_path / "out/lists/train.txt").read_text().split() == list(expected)[:2]
    assert json.loads((tmp_path / "out/tags.json").read_text()) == {
        "train2014/COCO_train2014_000000000001": ["person", "car"], "train2014/COCO_train2014_000000000002": ["dog"],
        "val2014/COCO_val2014_000000000004": ["person", "dog"]}


def test_tags_route_reaches_the_masks_labels(coco, tmp_path):
    root, files, expected = coco
    out = tmp_path / "out"
    convert_coco(files, CLASSES, out)
    lists = {s: str(out / "lists" / f"{s}.txt") for s in files}
    kw = {"lists": lists, "image_dir": ".", "aug_masks": str(out / "masks")}
    by_masks, _ = build_index(layout_of(root, CLASSES, **kw))
    by_tags, ids = build_index(layout_of(root, CLASSES, **kw, labels="tags", tags=str(out / "tags.json"),
                                         mask_splits=["train", "val"]))
    assert by_tags.labels == by_masks.labels == {i: sorted(set(np.unique(m)) - {0, 255}) for i, m in expected.items()}
    for split in ("train", "val"):  # the masks scored as predictions: the tags agree with every one
        assert score_label_maps(by_tags, ids[split], out / "masks")["label_disagreement"]["disagree"] == 0


def test_categories_that_are_not_the_configs_classes_are_named(coco, tmp_path):
    _, files, _ = coco
    with pytest.raises(StageError, match=r"instances_train2014.json: categories differ from data.classes at position 2 "
                                         r"\('car' vs 'dog'\)"):
        convert_coco(files, ["person", "dog", "car"], tmp_path / "out")
    assert not (tmp_path / "out/masks").exists()


def test_coco2014_config_and_its_dag(snakemake, planned_jobs, coco, tmp_path):
    cfg = yaml.safe_load((ROOT / "config/coco2014.yaml").read_text())
    assert len(cfg["data"]["classes"]) == 80 and cfg["data"]["classes"][:3] == ["person", "bicycle", "car"]
    root, _, _ = coco
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config").symlink_to(ROOT / "config")
    (wd / "classes.yaml").write_text(yaml.safe_dump({"data": {"classes": CLASSES}}))
    jobs = planned_jobs(snakemake(wd, "-n", "--configfile", "config/coco2014.yaml", "classes.yaml",
                                  "--config", f"data_root={root}"))
    assert jobs["convert_coco"] == 1 and jobs["image_labels"] == 1 and jobs["eval_cams"] == 1
    assert jobs["train_segmentation"] == 1 and jobs["eval_segmentation"] == 2


def test_stage_error_is_one_line_and_writes_nothing(tmp_path):
    from conftest import run_stage

    bad = tmp_path / "instances_train2014.json"
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    out = tmp_path / "out"
    proc = run_stage("convert_coco", input={"instances_train": bad},
                     output={"masks": out / "masks", "tags": out / "tags.json", "lists": [out / "lists/train.txt"]},
                     params={"classes": ["person"], "splits": ["train"]})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {bad}: no 'categories' (not a COCO instances file)"
    assert not (tmp_path / "out").exists()
