"""Rule image_labels: validate the dataset and derive image-level labels from its masks."""
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
    """(height, width) from the file header; a corrupt or missing image is a clear error."""
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except FileNotFoundError:
        raise StageError(f"{path}: image listed in the split file does not exist") from None
    except Exception as e:
        raise StageError(f"{path}: corrupt image ({e})") from None


def build_index(root: Path, classes: list[str], splits: list[str]) -> tuple[DatasetIndex, dict[str, list[str]]]:
    layout = VOCLayout(root)
    layout.check()
    labels, split_ids = {}, {}
    for split in splits:
        ids = layout.ids(split)
        split_ids[split] = ids
        for image_id in track(ids, f"image_labels {split}"):
            if image_id in labels:
                continue
            mask = read_mask(layout.mask_path(image_id), image_size(layout.image_path(image_id)), len(classes))
            labels[image_id] = image_level_labels(mask, len(classes))
    return DatasetIndex(layout, classes, labels), split_ids


def add_arguments(p):
    p.add_argument("--root", required=True, type=Path, help="the VOC2012 folder")
    p.add_argument("--classes", required=True, help="comma-separated foreground class names")
    p.add_argument("--splits", required=True, help="comma-separated split names with masks")
    p.add_argument("--out", required=True, type=Path, help="labels folder: image_labels.json, splits/<split>.txt")


def run(args):
    index, split_ids = build_index(args.root, args.classes.split(","), args.splits.split(","))
    for split, ids in split_ids.items():
        write_text(args.out / "splits" / f"{split}.txt", "\n".join(ids) + "\n")
    write_json(args.out / "image_labels.json", index.to_json())
    counts = {c: sum(i + 1 in v for v in index.labels.values()) for i, c in enumerate(index.classes)}
    log.info("image_labels: %d images; images per class: %s", len(index.labels), counts)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
