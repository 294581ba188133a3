"""Where a dataset's files are: the one owner of the data layout.

The workflow asks it which files a run reads (to plan its inputs and fingerprint them), and the stages ask it
where to read them. It is built from the config's ``data`` section and ``data_root``:

    <root>/<image_dir>/<id>.<ext>               any format PIL reads; ids may hold subfolders and spaces
    <root>/<mask_dir>/<id>.png                  palette or greyscale masks: 0 background, 1..C, 255 ignored
    <root>/ImageSets/Segmentation/<split>.txt   one id per line, unless data.lists names another file
    <aug_masks>/<id>.png                        masks for the ids <mask_dir> lacks (SBD's SegmentationClassAug)
    <root>/Annotations/<id>.xml                 VOC XML, for data.labels: xml

Three parts of a dataset may be written by a rule instead of the user: the generated embedded dataset
(make_dataset, at ``root``), SBD's masks converted to PNGs (convert_sbd) and COCO's masks, tags and lists
(convert_coco), both under ``resources/<run>/``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

from stages import StageError
from stages.data.voc import read_ids

log = logging.getLogger("stages")

RESOURCES = Path("resources")


def data_path(path: str, data_root: str | None) -> Path:
    """A dataset path of the config: a relative one is taken under ``data_root`` where that is set."""
    return Path(data_root) / path if data_root and not Path(path).is_absolute() else Path(path)


@dataclass(frozen=True)
class DatasetLayout:
    root: Path
    classes: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()  # the splits with image-level labels
    unlabeled: tuple[str, ...] = ()  # splits predicted only (VOC test): images, no labels, no masks
    train_splits: tuple[str, ...] = ()  # the splits that train: every image needs a label
    mask_splits: tuple[str, ...] = ()  # the splits with masks: checked by image_labels, scored later
    label_source: str = "masks"  # masks, tags or xml
    image_dir: str = "JPEGImages"
    mask_dir: str = "SegmentationClass"
    aug_masks: Path | None = None  # masks for the ids <mask_dir> lacks
    lists: dict[str, Path] = field(default_factory=dict)  # split lists kept outside ImageSets/Segmentation
    tags: Path | None = None
    sbd: Path | None = None  # SBD's dataset folder: its lists give train_aug where no list exists
    max_side: int | None = None
    # what rules write: {rule: its settings}; the files they write are part of this layout all the same
    generated: dict | None = None  # data.generate: make_dataset writes the dataset at root
    sbd_masks_converted: bool = False  # convert_sbd writes aug_masks from SBD's cls/*.mat
    coco: dict[str, Path] = field(default_factory=dict)  # convert_coco writes masks, tags and lists from these

    @classmethod
    def from_config(cls, data: dict, data_root: str | None = None, run: str = "run") -> DatasetLayout:
        """The layout a validated ``data`` section describes (relative paths under ``data_root``)."""
        path = lambda p: data_path(p, data_root)  # noqa: E731
        source = data["labels"]
        lists = {split: path(p) for split, p in data.get("lists", {}).items()}
        tags = path(data["tags"]) if "tags" in data else None
        aug = path(data["aug_masks"]) if "aug_masks" in data else None
        converted = "sbd" in data and not (aug and aug.is_dir())
        coco = {split: path(p) for split, p in data.get("coco", {}).items()}
        if converted:  # the user's SegmentationClassAug where it exists, else SBD's masks converted by convert_sbd
            aug = RESOURCES / run / "SegmentationClassAug"
        if coco:
            aug, tags = RESOURCES / run / "coco" / "masks", RESOURCES / run / "coco" / "tags.json"
            lists.update({split: RESOURCES / run / "coco" / "lists" / f"{split}.txt" for split in coco})
        root = path(data["root"])
        if aug is None and not data.get("generate") and (root / "SegmentationClassAug").is_dir():
            aug = root / "SegmentationClassAug"  # the usual place of the SBD-converted masks
        splits = tuple(data["splits"])
        return cls(
            root=root, classes=tuple(data["classes"]), splits=splits,
            unlabeled=(data["test_split"],) if "test_split" in data else (), train_splits=(data["train_split"],),
            mask_splits=tuple(data.get("mask_splits", splits if source == "masks" else ())), label_source=source,
            image_dir=data["image_dir"], mask_dir=data["mask_dir"], aug_masks=aug, lists=lists, tags=tags,
            sbd=path(data["sbd"]) if "sbd" in data else None, max_side=data.get("max_side"),
            generated=data.get("generate"), sbd_masks_converted=converted, coco=coco)

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = ({k: str(p) for k, p in v.items()} if f.name in ("lists", "coco") else
                           str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_json(cls, d: dict) -> DatasetLayout:
        paths = {"root", "aug_masks", "tags", "sbd"}
        kw = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            kw[f.name] = (Path(v) if f.name in paths and v is not None else
                          {k: Path(p) for k, p in v.items()} if f.name in ("lists", "coco") else
                          tuple(v) if isinstance(v, list) else v)
        return cls(**kw)

    @property
    def images(self) -> Path:
        return self.root / self.image_dir

    @property
    def voc_masks(self) -> Path:
        return self.root / self.mask_dir

    @property
    def annotations(self) -> Path:
        return self.root / "Annotations"

    def mask_path(self, image_id: str) -> Path:
        """VOC's own (finer, boundary-ignoring) mask where it exists, else the SBD-converted one."""
        voc = self.voc_masks / f"{image_id}.png"
        if self.aug_masks is None or voc.is_file():
            return voc
        return self.aug_masks / f"{image_id}.png"

    def annotation_path(self, image_id: str) -> Path:
        return self.annotations / f"{image_id}.xml"

    def split_file(self, split: str) -> Path:
        """The configured list where it exists, else ImageSets/Segmentation/<split>.txt (where conversions leave train_aug)."""
        standard = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        listed = self.lists.get(split)
        return listed if listed is not None and (listed.is_file() or not standard.is_file()) else standard

    def derives_train_aug(self, split: str) -> bool:
        """Whether ``split`` is train_aug derived from SBD's and VOC's lists: no list of it exists."""
        return split == "train_aug" and self.sbd is not None and not self.split_file(split).is_file()

    def ids(self, split: str) -> list[str]:
        """The ids of ``split``, in the list's order (train_aug derived from SBD where no list exists)."""
        if self.derives_train_aug(split):
            return self.derived_train_aug()
        return read_ids(self.split_file(split))

    def derived_train_aug(self) -> list[str]:
        """The field's train_aug: SBD train + SBD val + VOC train, minus VOC val (10,582 ids on the real data)."""
        ids = {*read_ids(self.sbd / "train.txt"), *read_ids(self.sbd / "val.txt"), *self.ids("train")}
        return sorted(ids - set(self.ids("val")))

    def list_files(self) -> list[Path]:
        """The split lists the ids are read from (SBD's own, for a derived train_aug)."""
        out = []
        for split in (*self.splits, *self.unlabeled):
            if self.derives_train_aug(split):
                out += [self.sbd / "train.txt", self.sbd / "val.txt"]
            else:
                out.append(self.split_file(split))
        return list(dict.fromkeys(out))

    def check(self) -> None:
        """Stop on a missing folder before reading any file."""
        if not self.images.is_dir():
            raise StageError(f"{self.images}: missing folder of images; data.root must hold it (data.image_dir)")
        if self.aug_masks is not None and not self.aug_masks.is_dir():
            raise StageError(f"{self.aug_masks}: missing folder of SBD-converted masks (data.aug_masks)")
        if self.mask_splits and self.aug_masks is None and not self.voc_masks.is_dir():
            raise StageError(f"{self.voc_masks}: missing folder of segmentation masks")
