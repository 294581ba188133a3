"""Rule image_labels: validate the dataset, locate every image and derive its class labels.

Labels come from the masks, a tags file or VOC XML annotations (``data.labels``). Every listed image is decoded,
and every mask it takes labels from read and checked, before anything is written, so a bad file stops the run
here, before any training, with its path in the message. (Masks that only score are checked where they are
scored; how often tags or XML disagree with them is counted there too.) The index also records what it read of
each image, mask and XML file (``records``: size, modification and status-change time, the sha256 of its bytes, and
the image's size or the file's classes), so that a dry run tells an edit that changes the index from one that does
not without reading the rest (stages/data/fingerprint.py).
"""
from __future__ import annotations

import logging
from pathlib import Path

from stages import StageError
from stages.core.job import Job, main
from stages.data.fingerprint import record
from stages.data.index import DatasetIndex
from stages.data.labels import read_tags, xml_labels
from stages.data.layout import DatasetLayout
from stages.data.voc import find_images, image_level_labels, open_image, read_mask
from stages.utils.io import write_json, write_text
from stages.utils.progress import track

log = logging.getLogger("stages")


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of a fully decoded image, EXIF orientation applied as every stage reads it."""
    width, height = open_image(path).size
    return height, width


def locate_images(layout: DatasetLayout, ids_by_split: dict[str, list[str]]) -> dict[str, str]:
    """id -> image path under the root, decided once for every stage: any extension PIL reads."""
    found = find_images(layout.images)
    images = {}
    for split, ids in ids_by_split.items():
        for image_id in ids:
            paths = found.get(image_id, [])
            if not paths:
                raise StageError(f"{layout.split_file(split)}: id {image_id!r} has no image in {layout.images} "
                                 "(any of .jpg, .jpeg, .png or another format PIL reads)")
            if len(paths) > 1:
                raise StageError(f"{paths[0]}: id {image_id!r} has {len(paths)} images ({', '.join(p.name for p in paths)}); keep one")
            images[image_id] = paths[0].relative_to(layout.root).as_posix()
    return images


def tag_labels(layout: DatasetLayout, ids: list[str]) -> dict[str, list[int]]:
    table = read_tags(layout.tags, list(layout.classes))
    missing = [i for i in ids if i not in table]
    if missing:
        raise StageError(f"{layout.tags}: no row for image {missing[0]!r} ({len(missing)} listed ids are not tagged)")
    return {i: table[i] for i in ids}


def annotation_labels(layout: DatasetLayout, ids: list[str], records: dict) -> dict[str, list[int]]:
    labels = {}
    for i in ids:
        path = layout.annotation_path(i)
        labels[i] = xml_labels(path, list(layout.classes))
        records[str(path)] = record(path, labels[i])
    return labels


def build_index(layout: DatasetLayout) -> tuple[DatasetIndex, dict[str, list[str]]]:
    """Labels for the ids of the layout's splits from its label source; its unlabeled splits (test) only need
    readable images. Returns the index and the ids of each split."""
    layout.check()
    classes = list(layout.classes)
    ids_by_split = {split: layout.ids(split) for split in (*layout.splits, *layout.unlabeled)}
    if any(layout.derives_train_aug(split) for split in ids_by_split):
        log.info("image_labels: train_aug derived from SBD's and VOC's lists: %d ids", len(ids_by_split["train_aug"]))
    images = locate_images(layout, ids_by_split)
    sizes, records = {}, {}
    for image_id, rel in track(list(images.items()), "image_labels (images)"):
        sizes[image_id] = list(image_size(layout.root / rel))
        records[str(layout.root / rel)] = record(layout.root / rel, sizes[image_id])
    labelled = list(dict.fromkeys(i for split in layout.splits for i in ids_by_split[split]))
    if layout.label_source == "masks":
        labels = mask_classes(layout, labelled, sizes, records)
    elif layout.label_source == "tags":
        labels = tag_labels(layout, labelled)
    else:
        labels = annotation_labels(layout, labelled, records)
    for split in layout.train_splits:
        untagged = [i for i in ids_by_split[split] if not labels[i]]
        if untagged and layout.label_source != "masks":
            raise StageError(f"{layout.tags or layout.annotations}: image {untagged[0]!r} of the training split "
                             f"{split!r} has no labels ({len(untagged)} such); tag it or drop it from the list")
    disagreement = {}
    if layout.label_source != "masks":  # tags or XML train; the masks there are only score, and are compared
        compared = list(dict.fromkeys(i for split in layout.mask_splits for i in ids_by_split[split]))
        in_masks = mask_classes(layout, compared, sizes, records)
        disagreement = {split: label_disagreement(ids_by_split[split], labels, in_masks) for split in layout.mask_splits}
    rest = frozenset(images) - labels.keys()
    index = DatasetIndex(layout, classes, labels, rest, images, sizes, layout.max_side, layout.label_source, records,
                         disagreement)
    return index, ids_by_split


def mask_classes(layout: DatasetLayout, ids: list[str], sizes: dict, records: dict) -> dict[str, list[int]]:
    """The classes in each id's mask, each mask read (and checked against its image's size) once."""
    n = len(layout.classes)
    found = {}
    for image_id in track(ids, "image_labels (masks)"):
        path = layout.mask_path(image_id)
        found[image_id] = image_level_labels(read_mask(path, sizes[image_id], n), n)
        records[str(path)] = record(path, found[image_id])
    return found


def label_disagreement(ids: list[str], labels: dict, in_masks: dict) -> dict:
    """How many images of a split with masks have image-level labels (from tags or XML) other than the classes of
    their mask, and the first of them."""
    differ = [i for i in ids if labels[i] != in_masks[i]]
    return {"images": len(ids), "disagree": len(differ), "first": differ[0] if differ else None}


def write_index(index: DatasetIndex, ids_by_split: dict[str, list[str]], labels: Path, splits: list[Path]) -> None:
    by_name = {path.stem: path for path in splits}
    for split, ids in ids_by_split.items():
        write_text(by_name[split], "\n".join(ids) + "\n")
    write_json(labels, index.to_json())
    counts = {c: sum(i + 1 in v for v in index.labels.values()) for i, c in enumerate(index.classes)}
    log.info("image_labels: %d labelled and %d unlabeled images; images per class: %s",
             len(index.labels), len(index.unlabeled), counts)
    for split, d in index.disagreement.items():
        log.info("image_labels: %s labels differ from the mask's classes on %d of %d %s images%s", index.source,
                 d["disagree"], d["images"], split, f" (first: {d['first']})" if d["first"] else "")


def run(job: Job) -> None:
    layout = DatasetLayout.from_config(job.params.data, job.params.data_root, job.params.run)
    write_index(*build_index(layout), job.output.labels, job.output.splits)


if __name__ == "__main__":
    main(run)
