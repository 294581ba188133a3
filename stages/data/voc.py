"""Read a dataset in the PASCAL VOC 2012 layout (the embedded one uses the same layout).

    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png          palette PNGs, 0 background, 1..C classes, 255 ignore
    <root>/SegmentationClassAug/<id>.png       SBD-converted masks, used instead where present
    <root>/ImageSets/Segmentation/<split>.txt  one id per line
"""
from __future__ import annotations

from dataclasses import dataclass
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

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def mask_dir(self) -> Path:
        aug = self.root / "SegmentationClassAug"
        return aug if aug.is_dir() else self.root / "SegmentationClass"

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path:
        return self.mask_dir / f"{image_id}.png"

    def split_file(self, split: str) -> Path:
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def ids(self, split: str) -> list[str]:
        return read_ids(self.split_file(split))

    def check(self) -> None:
        for sub in ("JPEGImages", "ImageSets/Segmentation"):
            if not (self.root / sub).is_dir():
                raise StageError(f"{self.root / sub}: missing folder; data.root must hold VOCdevkit/VOC2012 in the VOC layout")


def read_ids(path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: split list not found")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise StageError(f"{path}: split list is empty")
    return ids


def read_image(path) -> np.ndarray:
    """RGB uint8 H x W x 3."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise StageError(f"{path}: cannot read image (missing or corrupt)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path, image_shape=None, num_classes: int | None = None) -> np.ndarray:
    mask = read_label_png(path)
    if image_shape is not None and mask.shape != tuple(image_shape[:2]):
        raise StageError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {image_shape[1]}x{image_shape[0]}")
    if num_classes is not None:
        bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(num_classes + 1), IGNORE])
        if bad.size:
            raise StageError(f"{path}: label values {bad.tolist()} outside 0..{num_classes} and {IGNORE}")
    return mask


def image_level_labels(mask: np.ndarray, num_classes: int) -> list[int]:
    """Class ids (1..C) present in a mask."""
    present = np.unique(mask)
    return [int(c) for c in present if 1 <= c <= num_classes]
