"""What a rule's results depend on in a dataset, as one digest: the workflow names a file after it (rule
fingerprint), which the rule takes as an input, so that Snakemake reruns the rule exactly when that part of the
dataset changed. Two kinds:

- :func:`index_fingerprint`: what the image index (rule image_labels) holds: the layout, each split's ids, each
  image's file and size, each image's image-level labels (the classes of its mask, its tags or its XML). A mask
  edited without changing its image's classes, or an image replaced by one of the same size, leaves it as it
  was: nothing that reads only the index reruns.
- :func:`files_fingerprint`: the files of a split a rule reads itself: the images (what every stage that looks at
  pixels reads) or the masks (what scoring and the upper bound read), each by the sha256 of its bytes. A file
  replaced by another of the same size and modification time (``cp -p``, ``touch -r``, a restore from backup)
  changes it; a file touched or copied without a change of its bytes does not.

Only files the user provides are read. What a rule writes is covered by what it is written from: the generated
dataset by ``data.generate``, SBD's converted masks by SBD's ``.mat`` files, COCO's masks, tags and lists by the
instances files. (Reading a file a rule may rewrite in the same run would name a fingerprint that the next run
no longer finds, and rerun everything once more.)

Digests, image sizes and the classes of masks and XML files are computed only where the file's size, modification
time or status-change time differs from what image_labels recorded in ``image_labels.json`` (``records``): a dry
run over VOC hashes and reads the headers of the images replaced and decodes the masks edited since. The
status-change time (ctime) is what no copy or restore can set back: where size and mtime are kept, it still moves,
and the bytes decide.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from PIL import Image

from stages import StageError
from stages.data.labels import read_tags, xml_labels
from stages.data.layout import DatasetLayout
from stages.data.voc import find_images, image_level_labels
from stages.utils.io import read_label_png

ASPECTS = ("images", "masks")


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stat(path) -> list[int] | None:
    """[size, mtime_ns] of a file; None where it is missing (a later run that finds it sees a change)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def identity(path) -> list[int] | None:
    """[size, mtime_ns, ctime_ns] of a file: while all three are unchanged its bytes are (the ctime moves with any
    write and cannot be set back by a copy, ``touch`` or a restore); None where it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def sha256(path) -> str:
    """The sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def record(path, value) -> list:
    """What image_labels records of a file it read: its identity, its sha256 and what was read from it."""
    if (ident := identity(path)) is None:
        raise StageError(f"{path}: removed while the dataset was being read; rerun when it is complete")
    return [*ident, sha256(path), value]


def read_records(index_path) -> dict:
    """``{path: record}`` of what image_labels read (:func:`record`); empty without an index."""
    try:
        return json.loads(Path(index_path).read_text()).get("records", {})
    except (OSError, ValueError, AttributeError):
        return {}


def _recorded(path, records: dict) -> list | None:
    """The file's record where its identity still matches it."""
    record = records.get(str(path))
    return record if record is not None and len(record) == 5 and record[:3] == identity(path) else None


def cached(path: Path, records: dict, decode):
    """``decode(path)``, or what the records hold for the file where its identity still matches."""
    if (record := _recorded(path, records)) is not None:
        return record[4]
    st = stat(path)
    if st is None:
        return None
    try:
        return decode(path)
    except Exception:  # an unreadable file: image_labels stops on it and names it; here it is only a change
        return ["unreadable", st]


def content(path, records: dict) -> str | None:
    """The sha256 of a file's bytes (the records' where its identity still matches); None where it is missing."""
    if (record := _recorded(path, records)) is not None:
        return record[3]
    try:
        return sha256(path)
    except OSError:
        return None


# EXIF orientations that turn the picture by a quarter: the stored width is the shown height
QUARTER_TURNS = (5, 6, 7, 8)


def header_size(path: Path) -> list[int]:
    """[height, width] as the stages read the image (EXIF orientation applied), from its header alone."""
    with Image.open(path) as img:
        width, height = img.size
        turned = img.getexif().get(0x0112, 1) in QUARTER_TURNS
    return [width, height] if turned else [height, width]


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


def image_labels_of(layout: DatasetLayout, ids: list[str], records: dict) -> list:
    """Each id's image-level labels, from the layout's label source."""
    if layout.label_source == "tags":
        try:
            table = read_tags(layout.tags, list(layout.classes))
        except (StageError, OSError):
            return [["tags", stat(layout.tags)]]
        return [[i, table.get(i)] for i in ids]
    if layout.label_source == "xml":
        return [[i, cached(layout.annotation_path(i), records, lambda p: xml_labels(p, list(layout.classes)))] for i in ids]
    return mask_classes_of(layout, ids, records)


def mask_classes_of(layout: DatasetLayout, ids: list[str], records: dict) -> list:
    """The classes in each id's mask (or the SBD file it is converted from)."""
    classes = lambda p: image_level_labels(read_label_png(p), len(layout.classes))  # noqa: E731
    return [[i, sbd_source(layout, i) or cached(layout.mask_path(i), records, classes)] for i in ids]


def index_fingerprint(layout: DatasetLayout, index_path=None, images: dict | None = None) -> str:
    """What rule image_labels writes into the index, without reading the index's own output back: the layout,
    each split's ids, each image's file and size, each labelled image's labels. ``images`` (``find_images`` of
    the image folder) spares listing it again."""
    if layout.generated is not None:
        return digest(["generated", layout.generated, layout.to_json()])
    images = find_images(layout.images) if images is None else images
    records = read_records(index_path) if index_path else {}
    files = {i: [[p.relative_to(layout.root).as_posix(), cached(p, records, header_size)] for p in paths]
             for i, paths in images.items()}
    if layout.coco:  # the ids, tags and masks come from the instances files: any image may be listed
        sources = [[str(p), stat(p)] for p in sorted(layout.coco.values())]
        return digest([layout.to_json(), sources, sorted(files.items())])
    parts = [layout.to_json()]
    for split in (*layout.splits, *layout.unlabeled):
        ids = split_ids(layout, split)
        if ids is None:
            parts.append([split, "unreadable list", [[str(p), stat(p)] for p in layout.list_files()]])
            continue
        labels = image_labels_of(layout, ids, records) if split in layout.splits else []
        # labels from tags or XML are compared with the masks there are: image_labels counts the differences
        compared = split in layout.mask_splits and layout.label_source != "masks"
        masks = mask_classes_of(layout, ids, records) if compared else []
        parts.append([split, ids, [files.get(i) for i in ids], labels, masks])
    return digest(parts)


def files_fingerprint(layout: DatasetLayout, split: str, aspect: str, images: dict | None = None,
                      records: dict | None = None) -> str:
    """The bytes of each image (``aspect`` images) or mask (masks) of ``split``, as sha256 digests (``records``:
    image_labels's, which spare hashing the files unchanged since)."""
    records = records or {}
    if layout.generated is not None:
        return digest(["generated", layout.generated, layout.to_json(), split, aspect])
    if layout.coco and aspect == "masks":
        return digest([split, aspect, [[str(p), stat(p)] for p in sorted(layout.coco.values())]])
    ids = split_ids(layout, split)
    if aspect == "images":
        images = find_images(layout.images) if images is None else images
        ids = sorted(images) if ids is None else ids  # COCO: the folder's images
        return digest([split, aspect, [[i, [[str(p), content(p, records)] for p in images.get(i, [])]] for i in ids]])
    if ids is None:
        return digest([split, aspect, "unreadable list", [[str(p), stat(p)] for p in layout.list_files()]])
    return digest([split, aspect, [[i, sbd_source(layout, i) or content(layout.mask_path(i), records)] for i in ids]])
