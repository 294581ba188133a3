"""Read a dataset in the PASCAL VOC 2012 layout (the embedded one uses the same layout).

    <root>/JPEGImages/<id>.<ext>               any format PIL reads (.jpg, .jpeg, .png, ...); ids may hold
                                               subfolders and spaces
    <root>/SegmentationClass/<id>.png          palette PNGs, 0 background, 1..C classes, 255 ignore
    <root>/ImageSets/Segmentation/<split>.txt  one id per line
    <aug_masks>/<id>.png                       SBD-converted masks (SegmentationClassAug), for the ids
                                               SegmentationClass does not annotate (train_aug)

A split list may also live elsewhere (``lists``: the 10582-id train_aug list is not part of VOC);
``image_dir`` and ``mask_dir`` rename the two folders for a dataset of one's own.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from stages import StageError
from stages.io import read_label_png

log = logging.getLogger("stages")

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
    image_dir: str = "JPEGImages"
    mask_dir: str = "SegmentationClass"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        aug = self.aug_masks
        if aug is None and (self.root / "SegmentationClassAug").is_dir():
            aug = self.root / "SegmentationClassAug"  # the usual place of the SBD-converted masks
        object.__setattr__(self, "aug_masks", Path(aug) if aug is not None else None)
        object.__setattr__(self, "lists", {k: Path(v) for k, v in self.lists.items()})

    @property
    def voc_masks(self) -> Path:
        return self.root / self.mask_dir

    @property
    def images(self) -> Path:
        return self.root / self.image_dir

    def mask_path(self, image_id: str) -> Path:
        """VOC's own (finer, boundary-ignoring) mask where it exists, else the SBD-converted one."""
        voc = self.voc_masks / f"{image_id}.png"
        if self.aug_masks is None or voc.is_file():
            return voc
        return self.aug_masks / f"{image_id}.png"

    def split_file(self, split: str) -> Path:
        """The configured list where it exists, else ImageSets/Segmentation/<split>.txt (where conversions leave train_aug)."""
        standard = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        listed = self.lists.get(split)
        return listed if listed is not None and (listed.is_file() or not standard.is_file()) else standard

    def ids(self, split: str) -> list[str]:
        return read_ids(self.split_file(split))

    def check(self, masks: bool = True) -> None:
        """Stop on a missing folder before reading any file; ``masks`` when some split needs them."""
        if not self.images.is_dir():
            raise StageError(f"{self.images}: missing folder of images; data.root must hold it (data.image_dir)")
        if self.aug_masks is not None and not self.aug_masks.is_dir():
            raise StageError(f"{self.aug_masks}: missing folder of SBD-converted masks (data.aug_masks)")
        if masks and self.aug_masks is None and not self.voc_masks.is_dir():
            raise StageError(f"{self.voc_masks}: missing folder of segmentation masks")


def parse_id(line: str) -> str:
    """The id of one list line: the whole line (ids may hold spaces and subfolders), or the id of a
    path pair (``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png``) as train_aug lists ship it."""
    tokens = line.split()
    if line.startswith("/") and len(tokens) <= 2 and all(t.startswith("/") and Path(t).suffix for t in tokens):
        return Path(tokens[0]).stem
    return line.strip()


def read_ids(path) -> list[str]:
    """Ids, one per line; CRLF endings and blank lines are fine, a repeated id is kept once (with a warning)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: split list not found")
    ids = [parse_id(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not ids:
        raise StageError(f"{path}: split list is empty")
    seen: set[str] = set()
    repeated = [i for i in ids if i in seen or seen.add(i)]
    unique = list(dict.fromkeys(ids))
    if repeated:
        log.warning("%s: %d repeated ids read once (first: %r)", path, len(repeated), repeated[0])
    return unique


def image_extensions() -> frozenset[str]:
    """Every file extension PIL can open (lower case)."""
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def find_images(folder: Path) -> dict[str, list[Path]]:
    """id -> its image files under ``folder`` (one, unless formats repeat); the id is the path below it
    without the extension."""
    exts = image_extensions()
    found: dict[str, list[Path]] = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix.lower() in exts and path.is_file():
            found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    return found


def capped_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(height, width) with the longest side at most ``max_side`` (None: unchanged)."""
    h, w = size
    if not max_side or max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def open_image(path) -> Image.Image:
    """The decoded image as the camera meant it: EXIF orientation applied, any mode (grey, CMYK, RGBA,
    palette, 16-bit) converted to RGB. A missing, corrupt or truncated file is a clear error."""
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return img if img.mode == "RGB" else img.convert("RGB")
    except FileNotFoundError:
        raise StageError(f"{path}: image listed in the split file does not exist") from None
    except Exception as e:
        raise StageError(f"{path}: corrupt image ({e})") from None


def read_image(path, max_side: int | None = None) -> np.ndarray:
    """RGB uint8 H x W x 3, the longest side capped at ``max_side``; every stage reads images through it."""
    img = np.array(open_image(path))  # a writable copy: pydensecrf and in-place ops need one
    h, w = capped_size(img.shape[:2], max_side)
    if (h, w) != img.shape[:2]:
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)  # area: no aliasing when shrinking a photo
    return np.ascontiguousarray(img)


def resize_labels(label: np.ndarray, shape) -> np.ndarray:
    """A label map resized (nearest) to ``shape``: between an image's capped and original sizes."""
    h, w = shape[:2]
    if label.shape[:2] == (h, w):
        return label
    return cv2.resize(label.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)  # ids 0..255 fit uint8


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
