"""The dataset index written by rule image_labels and read by every later stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages import StageError
from stages.data.layout import DatasetLayout
from stages.data.voc import capped_size, read_ids, read_image
from stages.utils.io import read_json


@dataclass(frozen=True)
class DatasetIndex:
    layout: DatasetLayout
    classes: list[str]  # foreground class names; class id c is classes[c - 1]
    labels: dict[str, list[int]]  # image id -> class ids present (1..C)
    unlabeled: frozenset[str] = field(default_factory=frozenset)  # ids of mask-less splits (test): predicted only
    images: dict[str, str] = field(default_factory=dict)  # image id -> its file under layout.root, found once
    sizes: dict[str, list[int]] = field(default_factory=dict)  # image id -> (height, width) as decoded, EXIF applied
    max_side: int | None = None  # longest side the stages compute at (None: the image's own size)
    source: str = "masks"  # where the labels come from: masks, tags or xml
    records: dict = field(default_factory=dict)  # file -> [size, mtime_ns, ctime_ns, sha256, what was read] (fingerprint.record)
    # labels from tags or XML, per split with masks: {images, disagree (labels other than the mask's classes), first}
    disagreement: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names_with_background(self) -> list[str]:
        return ["background", *self.classes]

    def image_path(self, image_id: str) -> Path:
        return self.layout.root / self.images[image_id]

    def mask_path(self, image_id: str) -> Path:
        return self.layout.mask_path(image_id)

    def size(self, image_id: str) -> tuple[int, int]:
        """The image's own (height, width): predictions are written and scored at it."""
        return tuple(self.sizes[image_id])

    def work_size(self, image_id: str) -> tuple[int, int]:
        """The (height, width) the stages compute at: the own size with the longest side capped at max_side."""
        return capped_size(self.size(image_id), self.max_side)

    def read_image(self, image_id: str) -> np.ndarray:
        return read_image(self.image_path(image_id), self.max_side)

    def ids(self, split_file) -> list[str]:
        ids = read_ids(split_file)
        missing = [i for i in ids if i not in self.labels and i not in self.unlabeled]
        if missing:
            raise StageError(f"{split_file}: {len(missing)} ids have no image-level labels (first: {missing[0]})")
        return ids

    def classes_without_images(self, ids) -> list[str]:
        """The foreground classes that no image of ``ids`` holds."""
        present = {c for i in ids for c in self.labels.get(i, ())}
        return [name for c, name in enumerate(self.classes, 1) if c not in present]

    def to_json(self) -> dict:
        return {"layout": self.layout.to_json(), "max_side": self.max_side, "classes": self.classes,
                "labels": self.labels, "unlabeled": sorted(self.unlabeled), "images": self.images, "sizes": self.sizes,
                "source": self.source, "records": self.records, "label_disagreement": self.disagreement}


def missing_classes_warning(classes: list[str], where: str) -> str:
    """One line on classes the training images lack: nothing learns them, and mIoU leaves them out where no mask holds them."""
    names = ", ".join(map(repr, classes))
    return (f"class{'es' if len(classes) > 1 else ''} {names} {'have' if len(classes) > 1 else 'has'} no image in {where}: "
            "never learned, and left out of mIoU where no mask holds them")


def load_index(path) -> DatasetIndex:
    d = read_json(path)
    try:
        return DatasetIndex(DatasetLayout.from_json(d["layout"]), list(d["classes"]),
                            {k: list(v) for k, v in d["labels"].items()}, frozenset(d["unlabeled"]), dict(d["images"]),
                            dict(d["sizes"]), d["max_side"], d["source"], d["records"], d["label_disagreement"])
    except KeyError as e:
        raise StageError(f"{path}: missing key {e}; rerun image_labels (snakemake --forcerun image_labels)") from None
