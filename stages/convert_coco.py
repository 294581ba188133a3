"""Rule convert_coco: COCO ``instances_*.json`` to per-image palette masks, a tags file and split lists.

    <out>/masks/<folder>/<name>.png   0 background, c = the c-th category by COCO id (1..80), 255 crowd
    <out>/tags.json                   {id: [class names]}: the categories of the image's non-crowd objects
                                      (JSON, as COCO names hold spaces: "traffic light")
    <out>/lists/<split>.txt           the ids of the images with at least one non-crowd object

An id is ``<folder>/<name>`` (``train2014/COCO_train2014_000000000009``): the image folder is the
annotation file's suffix (``instances_train2014.json`` -> ``train2014``), as COCO ships them.
Overlapping objects are painted largest first, so a smaller object stays visible on a larger one
(the usual WSSS conversion); crowd regions are ignored (255) where no object covers them.
"""
from __future__ import annotations

import json
import logging
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from stages import StageError
from stages.core.job import Job, main
from stages.core.staging import StagedOutputs, inputs_key
from stages.data.voc import IGNORE
from stages.utils.io import save_label_png, write_json, write_text
from stages.utils.progress import track

log = logging.getLogger("stages")


def read_instances(path: Path) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: COCO annotation file not found (data.coco)") from None
    except json.JSONDecodeError as e:
        raise StageError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in d]
    if missing:
        raise StageError(f"{path}: no {missing[0]!r} (not a COCO instances file)")
    return d


def category_index(path: Path, categories: list[dict], classes: list[str]) -> dict[int, int]:
    """COCO category id -> class id (1..C) in the order of COCO ids; the names must be data.classes."""
    ordered = sorted(categories, key=lambda c: c["id"])
    names = [c["name"] for c in ordered]
    if names != list(classes):
        first = next((k for k, (a, b) in enumerate(zip(names, classes)) if a != b), min(len(names), len(classes)))
        raise StageError(f"{path}: categories differ from data.classes at position {first + 1} "
                         f"({names[first] if first < len(names) else None!r} vs {classes[first] if first < len(classes) else None!r})")
    return {c["id"]: k + 1 for k, c in enumerate(ordered)}


def decode(segmentation, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed RLE or compressed RLE -> H x W bool."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    with warnings.catch_warnings():  # pycocotools' own call into numpy 2 warns on every mask; the result is right
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def paint(annotations: list[dict], categories: dict[int, int], height: int, width: int) -> np.ndarray:
    """The class map of one image: objects largest first, then crowd regions as 255 where still background."""
    label = np.zeros((height, width), np.uint8)
    objects = sorted((a for a in annotations if not a.get("iscrowd")), key=lambda a: -a["area"])
    for a in objects:
        label[decode(a["segmentation"], height, width)] = categories[a["category_id"]]
    crowd = np.zeros((height, width), bool)
    for a in annotations:
        if a.get("iscrowd"):
            crowd |= decode(a["segmentation"], height, width)
    label[crowd & (label == 0)] = IGNORE
    return label


def image_folder(path: Path) -> str:
    """``instances_train2014.json`` -> ``train2014``."""
    stem = Path(path).stem
    return stem.split("_", 1)[1] if stem.startswith("instances_") else stem


def convert_coco(files: dict[str, Path], classes: list[str], out: Path) -> dict[str, int]:
    """Convert each split's instances file; returns the number of listed images per split."""
    out = Path(out)
    tags, lists = {}, {}
    instances = {split: read_instances(path) for split, path in files.items()}  # every file checked before writing
    class_of = {split: category_index(files[split], d["categories"], classes) for split, d in instances.items()}
    staged = StagedOutputs(out / "masks", ".png", "convert_coco", classes, inputs_key(*files.values()))
    for split, path in files.items():
        d, categories = instances.pop(split), class_of[split]
        by_image = defaultdict(list)
        for a in d["annotations"]:
            if a["category_id"] not in categories:
                raise StageError(f"{path}: annotation {a.get('id')} has unknown category_id {a['category_id']}")
            by_image[a["image_id"]].append(a)
        folder = image_folder(path)
        ids = []
        for image in track(sorted(d["images"], key=lambda i: i["file_name"]), f"convert_coco {split}"):
            anns = by_image.get(image["id"], [])
            names = sorted({categories[a["category_id"]] for a in anns if not a.get("iscrowd")})
            if not names:
                continue  # no object to learn from: left out of the lists, as WSSS does on COCO
            image_id = f"{folder}/{Path(image['file_name']).stem}"
            ids.append(image_id)
            tags[image_id] = [classes[c - 1] for c in names]
            if not staged.path(image_id).exists():
                save_label_png(staged.path(image_id), paint(anns, categories, image["height"], image["width"]))
        lists[split] = ids
    staged.commit()
    for split, ids in lists.items():
        write_text(out / "lists" / f"{split}.txt", "\n".join(ids) + "\n")
    write_json(out / "tags.json", tags)
    return {split: len(ids) for split, ids in lists.items()}


def run(job: Job) -> None:
    files = {split: job.input[f"instances_{split}"] for split in job.params.splits}
    counts = convert_coco(files, job.params.classes, job.output.tags.parent)
    log.info("convert_coco: images with objects per split: %s", counts)


if __name__ == "__main__":
    main(run)
