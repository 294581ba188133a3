"""Rule image_labels: validate the dataset, locate every image and derive its class labels.

Labels come from the masks, a tags file or VOC XML annotations (``--source``). Every listed image
is decoded and every mask read and checked before anything is written, so a bad file stops the
run here, before any training, with its path in the message. Where labels come from tags or XML
and masks exist too, how often the two disagree is logged and recorded in the index.
"""
from __future__ import annotations

import logging
from pathlib import Path

from stages import StageError, cli
from stages.data.index import DatasetIndex
from stages.data.labels import LABEL_SOURCES
from stages.data.voc import VOCLayout, find_images, image_level_labels, open_image, read_ids, read_mask
from stages.io import write_json, write_text
from stages.progress import track

log = logging.getLogger("stages")


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of a fully decoded image, EXIF orientation applied as every stage reads it."""
    width, height = open_image(path).size
    return height, width


def derive_train_aug(layout: VOCLayout, sbd: Path) -> list[str]:
    """The field's train_aug: SBD train + SBD val + VOC train, minus VOC val (10,582 ids on the real data)."""
    ids = {*read_ids(Path(sbd) / "train.txt"), *read_ids(Path(sbd) / "val.txt"), *layout.ids("train")}
    derived = sorted(ids - set(layout.ids("val")))
    log.info("image_labels: train_aug derived from SBD's and VOC's lists: %d ids", len(derived))
    return derived


def split_ids(layout: VOCLayout, split: str, sbd: Path | None) -> list[str]:
    if split == "train_aug" and sbd is not None and not layout.split_file(split).is_file():
        return derive_train_aug(layout, sbd)
    return layout.ids(split)


def locate_images(layout: VOCLayout, ids_by_split: dict[str, list[str]]) -> dict[str, str]:
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


def label_disagreement(labels: dict, mask_labels: dict, ids: list[str]) -> dict:
    differ = [i for i in ids if labels[i] != mask_labels[i]]
    return {"images": len(ids), "disagree": len(differ), "first": differ[0] if differ else None}


def build_index(root: Path, classes: list[str], splits: list[str], unlabeled: list[str] = (),
                aug_masks: Path | None = None, lists: dict[str, Path] | None = None, *, source: str = "masks",
                tags: Path | None = None, mask_splits: list[str] | None = None, train_splits: list[str] = (),
                image_dir: str = "JPEGImages", mask_dir: str = "SegmentationClass", max_side: int | None = None,
                sbd: Path | None = None) -> tuple[DatasetIndex, dict[str, list[str]]]:
    """Labels for the ids of ``splits`` from ``source``; ``mask_splits`` (all of ``splits`` by default) have
    masks, checked here; ``unlabeled`` splits (test) only need readable images. Returns the index (with,
    per mask split, how often labels from tags/XML disagree with the masks) and the ids of each split."""
    if source != "masks" and source not in LABEL_SOURCES:
        raise StageError(f"data.labels: unknown {source!r} (known: masks, {', '.join(LABEL_SOURCES)})")
    mask_splits = list(splits) if mask_splits is None else list(mask_splits)
    if source == "masks" and set(splits) - set(mask_splits):
        raise StageError(f"data.mask_splits: labels come from the masks, so every split of data.splits needs them; "
                         f"{sorted(set(splits) - set(mask_splits))} has none")
    layout = VOCLayout(root, aug_masks, lists or {}, image_dir, mask_dir)
    layout.check(masks=bool(mask_splits))
    ids_by_split = {split: split_ids(layout, split, sbd) for split in [*splits, *unlabeled]}
    images = locate_images(layout, ids_by_split)
    sizes = {i: list(image_size(layout.root / p)) for i, p in track(list(images.items()), "image_labels (images)")}
    mask_labels = {}
    for split in mask_splits:
        for image_id in track(ids_by_split[split], f"image_labels {split} (masks)"):
            if image_id not in mask_labels:
                mask = read_mask(layout.mask_path(image_id), sizes[image_id], len(classes))
                mask_labels[image_id] = image_level_labels(mask, len(classes))
    labelled = list(dict.fromkeys(i for split in splits for i in ids_by_split[split]))
    if source == "masks":
        labels = {i: mask_labels[i] for i in labelled}
    else:
        labels = LABEL_SOURCES[source](labelled, classes, layout.root, tags)
        for split in train_splits:
            untagged = [i for i in ids_by_split[split] if not labels[i]]
            if untagged:
                raise StageError(f"{tags or layout.root / 'Annotations'}: image {untagged[0]!r} of the training split "
                                 f"{split!r} has no labels ({len(untagged)} such); tag it or drop it from the list")
    disagreement = {} if source == "masks" else {
        split: label_disagreement(labels, mask_labels, ids_by_split[split]) for split in mask_splits}
    for split, d in disagreement.items():
        if d["disagree"]:
            log.warning("image_labels: %s labels disagree with the masks on %d of %d %s images (first: %r)",
                        source, d["disagree"], d["images"], split, d["first"])
    rest = frozenset(images) - labels.keys()
    index = DatasetIndex(layout, classes, labels, rest, images, sizes, max_side, source, disagreement)
    return index, ids_by_split


def names(text: str) -> list[str]:
    return [s for s in text.split(",") if s]


def add_arguments(p):
    p.add_argument("--root", required=True, type=Path, help="the dataset folder (VOC2012 for VOC)")
    p.add_argument("--classes", required=True, help="comma-separated foreground class names")
    p.add_argument("--splits", required=True, type=names, help="comma-separated split names with image-level labels")
    p.add_argument("--unlabeled", type=names, default=[], help="comma-separated split names without labels (test)")
    p.add_argument("--mask-splits", type=names, default=None,
                   help="comma-separated splits with masks (default: all of --splits)")
    p.add_argument("--train-splits", type=names, default=[], help="splits that train: every image needs a label")
    p.add_argument("--source", default="masks", help=f"where labels come from: masks, {', '.join(LABEL_SOURCES)}")
    p.add_argument("--tags", type=Path, default=None, help="tags file (CSV id,labels or JSON {id: [names]})")
    p.add_argument("--image-dir", default="JPEGImages", help="image folder under --root")
    p.add_argument("--mask-dir", default="SegmentationClass", help="mask folder under --root")
    p.add_argument("--max-side", type=int, default=None, help="longest side the stages compute at")
    p.add_argument("--aug-masks", type=Path, default=None, help="SegmentationClassAug folder (SBD-converted masks)")
    p.add_argument("--sbd", type=Path, default=None, help="SBD's dataset folder: train_aug is derived from its lists if absent")
    p.add_argument("--list", type=cli.named_path, action="append", default=[], metavar="SPLIT=PATH",
                   help="a split list outside ImageSets/Segmentation (e.g. train_aug=/data/train_aug.txt)")
    p.add_argument("--out", required=True, type=Path, help="labels folder: image_labels.json, splits/<split>.txt")


def run(args):
    index, ids_by_split = build_index(
        args.root, args.classes.split(","), args.splits, args.unlabeled, args.aug_masks, dict(args.list),
        source=args.source, tags=args.tags, mask_splits=args.mask_splits, train_splits=args.train_splits,
        image_dir=args.image_dir, mask_dir=args.mask_dir, max_side=args.max_side, sbd=args.sbd)
    for split, ids in ids_by_split.items():
        write_text(args.out / "splits" / f"{split}.txt", "\n".join(ids) + "\n")
    write_json(args.out / "image_labels.json", index.to_json())
    counts = {c: sum(i + 1 in v for v in index.labels.values()) for i, c in enumerate(index.classes)}
    log.info("image_labels: %d labelled and %d unlabeled images; images per class: %s",
             len(index.labels), len(index.unlabeled), counts)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
