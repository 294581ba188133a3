"""Read a dataset in the PASCAL VOC 2012 layout (the embedded one uses the same layout).

    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png          palette PNGs, 0 background, 1..C classes, 255 ignore
    <root>/ImageSets/Segmentation/<split>.txt  one id per line
    <aug_masks>/<id>.png                       SBD-converted masks (SegmentationClassAug), for the ids
                                               SegmentationClass does not annotate (train_aug)

A split list may also live elsewhere (``lists``: the 10582-id train_aug list is not part of VOC).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stages import StageError
from stages.io import read_label_png

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
IGNORE = 255


@dataclass(frozen=True)
class VOCLayout:
    root: Path
    aug_masks: Path | None = None
    lists: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        aug = self.aug_masks
        if aug is None and (self.root / "SegmentationClassAug").is_dir():
            aug = self.root / "SegmentationClassAug"  # the usual place of the SBD-converted masks
        object.__setattr__(self, "aug_masks", Path(aug) if aug is not None else None)
        object.__setattr__(self, "lists", {k: Path(v) for k, v in self.lists.items()})

    @property
    def voc_masks(self) -> Path:
        return self.root / "SegmentationClass"

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path:
        """VOC's own (finer, boundary-ignoring) mask where it exists, else the SBD-converted one."""
        voc = self.voc_masks / f"{image_id}.png"
        if self.aug_masks is None or voc.is_file():
            return voc
        return self.aug_masks / f"{image_id}.png"

    def split_file(self, split: str) -> Path:
        return self.lists.get(split, self.root / "ImageSets" / "Segmentation" / f"{split}.txt")

    def ids(self, split: str) -> list[str]:
        return read_ids(self.split_file(split))

    def check(self, masks: bool = True) -> None:
        """Stop on a missing folder before reading any file; ``masks`` when some split needs them."""
        needed = ["JPEGImages", "ImageSets/Segmentation"]
        for path in [self.root / sub for sub in needed]:
            if not path.is_dir():
                raise StageError(f"{path}: missing folder; data.root must hold VOCdevkit/VOC2012 in the VOC layout")
        if self.aug_masks is not None and not self.aug_masks.is_dir():
            raise StageError(f"{self.aug_masks}: missing folder of SBD-converted masks (data.aug_masks)")
        if masks and self.aug_masks is None and not self.voc_masks.is_dir():
            raise StageError(f"{self.voc_masks}: missing folder of segmentation masks")


def read_ids(path) -> list[str]:
    """Ids, one per line; a line may also be a path pair (``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png``)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: split list not found")
    first = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    ids = [Path(tok).stem if "/" in tok else tok for tok in first]
    if not ids:
        raise StageError(f"{path}: split list is empty")
    return ids


def read_image(path) -> np.ndarray:
    """RGB uint8 H x W x 3."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise StageError(f"{path}: cannot read image (missing or corrupt)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def check_label_values(path, mask: np.ndarray, num_classes: int) -> None:
    bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(num_classes + 1), IGNORE])
    if bad.size:
        raise StageError(f"{path}: label values {bad.tolist()} outside 0..{num_classes} and {IGNORE}")


def read_mask(path, image_shape=None, num_classes: int | None = None) -> np.ndarray:
    mask = read_label_png(path)
    if image_shape is not None and mask.shape != tuple(image_shape[:2]):
        raise StageError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {image_shape[1]}x{image_shape[0]}")
    if num_classes is not None:
        check_label_values(path, mask, num_classes)
    return mask


def image_level_labels(mask: np.ndarray, num_classes: int) -> list[int]:
    """Class ids (1..C) present in a mask."""
    present = np.unique(mask)
    return [int(c) for c in present if 1 <= c <= num_classes]
