"""What a rule's results depend on in a dataset, as one digest: the workflow gives it to the rule as a param, so
that Snakemake reruns the rule exactly when its part of the dataset changed.

A split's digest covers some of three aspects:

- ``images``: each image file (size and modification time);
- ``labels``: each image's image-level labels (the classes of its mask, its tags or its XML): a mask edited
  without changing its classes leaves them as they were;
- ``masks``: each mask file (size and modification time): what scoring and the upper bound read.

Only files the user provides are read. What a rule writes is covered by what it is written from: the generated
dataset by ``data.generate``, SBD's converted masks by SBD's ``.mat`` files, COCO's masks, tags and lists by the
instances files. Reading a file a rule may rewrite later in the same run would record a value that the next
run no longer finds, and rerun everything once more.

Masks and XML files are decoded only where their size or modification time differs from what image_labels
recorded in ``image_labels.json`` (``label_records``): a dry run over VOC decodes the files edited since.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from stages import StageError
from stages.data.labels import read_tags, xml_labels
from stages.data.layout import DatasetLayout
from stages.data.voc import find_images, image_level_labels
from stages.utils.io import read_label_png

ASPECTS = ("images", "labels", "masks")
MISSING = None  # the stat of a file that is not there: a later run that finds it sees a change


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stat(path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return MISSING
    return [st.st_size, st.st_mtime_ns]


def label_records(index_path) -> dict:
    """``{path: [size, mtime_ns, classes]}`` of the masks and XML files image_labels decoded; empty without an index."""
    try:
        return json.loads(Path(index_path).read_text()).get("label_records", {})
    except (OSError, ValueError, AttributeError):
        return {}


def decoded_classes(path: Path, records: dict, decode) -> list[int] | None:
    """The classes of one mask or XML file: the record where its stat matches, else decoded now."""
    st = stat(path)
    if st is None:
        return None
    record = records.get(str(path))
    if record is not None and record[:2] == st:
        return record[2]
    try:
        return decode(path)
    except Exception:  # an unreadable file: image_labels stops on it with the message; here it is just a change
        return ["unreadable", st]


def split_ids(layout: DatasetLayout, split: str) -> list[str] | None:
    """The ids of a split as the user's files list them; None where they cannot be read (image_labels names why)."""
    try:
        return layout.ids(split)
    except (StageError, OSError):
        return None


def sbd_source(layout: DatasetLayout, image_id: str) -> list | None:
    """The SBD .mat file a converted mask is written from, where the mask is convert_sbd's."""
    if layout.sbd_masks_converted and not (layout.voc_masks / f"{image_id}.png").is_file():
        mat = layout.sbd / "cls" / f"{image_id}.mat"
        return [str(mat), stat(mat)]
    return None


def aspect_values(layout: DatasetLayout, ids: list[str], aspect: str, records: dict, images: dict) -> list:
    """Per id, what ``aspect`` of it the results depend on; ``images``: the image folder's files by id."""
    if aspect == "images":
        return [[i, [[str(p), stat(p)] for p in images.get(i, [])]] for i in ids]
    if aspect == "masks":
        return [[i, sbd_source(layout, i) or stat(layout.mask_path(i))] for i in ids]
    if layout.label_source == "tags":
        try:
            table = read_tags(layout.tags, list(layout.classes))
        except (StageError, OSError):
            return [["tags", stat(layout.tags)]]
        return [[i, table.get(i)] for i in ids]
    if layout.label_source == "xml":
        decode = functools.partial(xml_labels, classes=list(layout.classes))
        return [[i, decoded_classes(layout.annotation_path(i), records, decode)] for i in ids]
    decode = lambda path: image_level_labels(read_label_png(path), len(layout.classes))  # noqa: E731
    return [[i, sbd_source(layout, i) or decoded_classes(layout.mask_path(i), records, decode)] for i in ids]


def fingerprint(layout: DatasetLayout, split: str, aspects, index_path=None, images: dict | None = None) -> str:
    """The digest of ``aspects`` of ``split``; ``index_path`` (image_labels.json, where it exists) spares decoding
    the masks and XML files that have not changed since it was written; ``images`` (``find_images`` of the image
    folder) spares listing it again."""
    if layout.generated is not None:
        return digest(["generated", layout.generated, layout.classes, split, sorted(aspects)])
    if layout.coco:  # ids, masks and tags come from the instances files; the images are the user's folder
        images = find_images(layout.images) if images is None else images
        sources = [[str(p), stat(p)] for p in sorted(layout.coco.values())]
        return digest([split, sources, aspect_values(layout, sorted(images), "images", {}, images)
                       if "images" in aspects else None])
    ids = split_ids(layout, split)
    if ids is None:
        return digest([split, "unreadable list", [[str(p), stat(p)] for p in layout.list_files()]])
    records = label_records(index_path) if index_path else {}
    if "images" in aspects and images is None:
        images = find_images(layout.images)
    return digest([split, ids, *(aspect_values(layout, ids, a, records, images) for a in sorted(aspects))])


def dataset_fingerprint(layout: DatasetLayout, images: dict | None = None) -> str:
    """Everything image_labels reads, decoding nothing: the layout itself, every split's list, images and masks,
    the tags file, the XML files."""
    files = [layout.to_json(), stat(layout.tags) if layout.tags is not None else None]
    for split in (*layout.splits, *layout.unlabeled):
        files.append(fingerprint(layout, split, ("images", "masks") if split in layout.mask_splits else ("images",),
                                 images=images))
    if layout.label_source == "xml" and layout.annotations.is_dir():
        files.append(sorted([p.as_posix(), stat(p)] for p in layout.annotations.rglob("*.xml")))
    return digest(files)
