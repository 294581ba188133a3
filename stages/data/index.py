"""The dataset index written by rule image_labels and read by every later stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stages import StageError
from stages.data.voc import VOCLayout, read_ids
from stages.io import read_json


@dataclass(frozen=True)
class DatasetIndex:
    layout: VOCLayout
    classes: list[str]  # foreground class names; class id c is classes[c - 1]
    labels: dict[str, list[int]]  # image id -> class ids present (1..C)
    unlabeled: frozenset[str] = field(default_factory=frozenset)  # ids of mask-less splits (test): predicted only

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names_with_background(self) -> list[str]:
        return ["background", *self.classes]

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
        aug = self.layout.aug_masks
        return {"root": str(self.layout.root), "aug_masks": str(aug) if aug else None, "classes": self.classes,
                "labels": self.labels, "unlabeled": sorted(self.unlabeled)}


def missing_classes_warning(classes: list[str], where: str) -> str:
    """One line on classes the training images lack: nothing learns them, and mIoU leaves them out where no mask holds them."""
    names = ", ".join(map(repr, classes))
    return (f"class{'es' if len(classes) > 1 else ''} {names} {'have' if len(classes) > 1 else 'has'} no image in {where}: "
            "never learned, and left out of mIoU where no mask holds them")


def load_index(path) -> DatasetIndex:
    d = read_json(path)
    try:
        layout = VOCLayout(Path(d["root"]), d.get("aug_masks"))
        return DatasetIndex(layout, list(d["classes"]), {k: list(v) for k, v in d["labels"].items()},
                            frozenset(d.get("unlabeled", ())))
    except KeyError as e:
        raise StageError(f"{path}: missing key {e}") from None
