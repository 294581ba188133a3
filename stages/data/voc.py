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
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from stages import StageError
from stages.utils.io import read_label_png

log = logging.getLogger("stages")

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
IGNORE = 255


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


# The value a transparent pixel takes: ImageNet's mean colour, which the network sees as zero after normalisation.
TRANSPARENT = (124, 116, 104)


def _converted(img: Image.Image) -> Image.Image:
    return img.convert("RGB")


def _composited(img: Image.Image) -> Image.Image:
    """Alpha blended over :data:`TRANSPARENT`: the colours under a transparent pixel are not part of the picture."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*TRANSPARENT, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _palette(img: Image.Image) -> Image.Image:
    return _composited(img) if "transparency" in img.info else _converted(img)


def _grey(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L").convert("RGB")


def _sixteen_bit(img: Image.Image) -> Image.Image:
    """16-bit grey scaled to 8 bits (65535 -> 255): PIL's own conversion clips everything above 255 to white."""
    return _grey(np.asarray(img, np.float64) / 257)


def _integer(img: Image.Image, path) -> Image.Image:
    values = np.asarray(img, np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise StageError(f"{path}: 32-bit integer image with values in [{values.min()}, {values.max()}]; "
                         "only 0..65535 (16-bit) can be read: convert it to 8 or 16 bits")
    return _grey(values / 257)


def _float(img: Image.Image, path) -> Image.Image:
    values = np.asarray(img, np.float64)
    if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
        raise StageError(f"{path}: floating-point image with values outside [0, 1] "
                         f"({np.nanmin(values):.4g} to {np.nanmax(values):.4g}); convert it to 8 or 16 bits")
    return _grey(values * 255)


# PIL image mode -> the RGB uint8 image its content gives; a mode missing here stops with one line.
MODE_READERS = {
    "RGB": lambda img, path: img,
    **dict.fromkeys(("1", "L", "CMYK", "YCbCr", "LAB", "HSV"), lambda img, path: _converted(img)),
    "P": lambda img, path: _palette(img),
    **dict.fromkeys(("RGBA", "RGBa", "LA", "PA"), lambda img, path: _composited(img)),
    **dict.fromkeys(("I;16", "I;16L", "I;16B", "I;16N"), lambda img, path: _sixteen_bit(img)),
    "I": _integer,
    "F": _float,
}


_WARNED: set[str] = set()  # photos past PIL's size warning: each is named once per process


def open_image(path) -> Image.Image:
    """The decoded image as the camera meant it: EXIF orientation applied, its mode made 8-bit RGB with the content
    kept (16-bit and float scaled, transparency blended over ImageNet's mean colour). A missing, corrupt or
    truncated file, or a mode that cannot be read faithfully, is a clear error."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning) and str(path) not in _WARNED:
                _WARNED.add(str(path))
                log.warning("%s: %s (data.max_side caps the size the stages compute at)", path, w.message)
    except FileNotFoundError:
        raise StageError(f"{path}: image listed in the split file does not exist") from None
    except Exception as e:
        raise StageError(f"{path}: corrupt image ({e})") from None
    reader = MODE_READERS.get(img.mode)
    if reader is None:
        raise StageError(f"{path}: image mode {img.mode} cannot be read faithfully; save it as 8-bit RGB")
    return reader(img, path)


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
