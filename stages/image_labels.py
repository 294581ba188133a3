"""Rule image_labels: validate the dataset and derive image-level labels from its masks.

Every listed image is decoded and every mask read and checked before anything is written,
so a bad file stops the run here, before any training, with its path in the message.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from stages import StageError, cli
from stages.data.index import DatasetIndex
from stages.data.voc import VOCLayout, image_level_labels, read_mask
from stages.io import write_json, write_text
from stages.progress import track

log = logging.getLogger("stages")


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of a fully decoded image: a missing, corrupt or truncated file is a clear error."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.size[1], img.size[0]
    except FileNotFoundError:
        raise StageError(f"{path}: image listed in the split file does not exist") from None
    except Exception as e:
        raise StageError(f"{path}: corrupt image ({e})") from None


def build_index(root: Path, classes: list[str], splits: list[str], unlabeled: list[str] = (),
                aug_masks: Path | None = None, lists: dict[str, Path] | None = None
                ) -> tuple[DatasetIndex, dict[str, list[str]]]:
    """Labels for the ids of ``splits`` (from their masks); ``unlabeled`` splits (test) only need readable images."""
    layout = VOCLayout(root, aug_masks, lists or {})
    layout.check(masks=bool(splits))
    split_ids = {split: layout.ids(split) for split in [*splits, *unlabeled]}
    labels = {}
    for split in splits:
        for image_id in track(split_ids[split], f"image_labels {split}"):
            if image_id not in labels:
                mask = read_mask(layout.mask_path(image_id), image_size(layout.image_path(image_id)), len(classes))
                labels[image_id] = image_level_labels(mask, len(classes))
    rest = {i for split in unlabeled for i in split_ids[split]} - labels.keys()
    for image_id in track(sorted(rest), "image_labels (no masks)"):
        image_size(layout.image_path(image_id))
    return DatasetIndex(layout, classes, labels, frozenset(rest)), split_ids


def named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"expected SPLIT=PATH, got {text!r}")
    return name, Path(path)


def add_arguments(p):
    p.add_argument("--root", required=True, type=Path, help="the VOC2012 folder")
    p.add_argument("--classes", required=True, help="comma-separated foreground class names")
    p.add_argument("--splits", required=True, help="comma-separated split names with masks")
    p.add_argument("--unlabeled", default="", help="comma-separated split names without masks (test)")
    p.add_argument("--aug-masks", type=Path, default=None, help="SegmentationClassAug folder (SBD-converted masks)")
    p.add_argument("--list", type=named_path, action="append", default=[], metavar="SPLIT=PATH",
                   help="a split list outside ImageSets/Segmentation (e.g. train_aug=/data/train_aug.txt)")
    p.add_argument("--out", required=True, type=Path, help="labels folder: image_labels.json, splits/<split>.txt")


def run(args):
    unlabeled = [s for s in args.unlabeled.split(",") if s]
    index, split_ids = build_index(args.root, args.classes.split(","), args.splits.split(","), unlabeled,
                                   args.aug_masks, dict(args.list))
    for split, ids in split_ids.items():
        write_text(args.out / "splits" / f"{split}.txt", "\n".join(ids) + "\n")
    write_json(args.out / "image_labels.json", index.to_json())
    counts = {c: sum(i + 1 in v for v in index.labels.values()) for i, c in enumerate(index.classes)}
    log.info("image_labels: %d labelled and %d unlabeled images; images per class: %s",
             len(index.labels), len(index.unlabeled), counts)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
