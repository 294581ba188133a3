"""Rule pack_test: test-split predictions in the PASCAL VOC evaluation server's layout, and its .tar.

    <out>/results/VOC2012/Segmentation/comp6_test_cls/<id>.png   (comp6: trained without VOC's own masks)
"""
from __future__ import annotations

import tarfile
from pathlib import Path

from stages import StageError
from stages.core.job import Job, main, split_index
from stages.data.voc import read_mask
from stages.utils.io import atomic_path, save_label_png
from stages.utils.progress import track

SERVER_DIR = Path("results/VOC2012/Segmentation/comp6_test_cls")


def pack_test(index, ids, pred: Path, out: Path, tar: Path) -> None:
    """Check each prediction (present, image-sized, labels 0..C), copy it as a palette PNG, pack the tree."""
    folder = out / SERVER_DIR
    for image_id in track(ids, "pack_test"):
        path = pred / f"{image_id}.png"
        if not path.is_file():
            raise StageError(f"{path}: no prediction for test image {image_id}")
        label = read_mask(path, index.size(image_id), index.num_classes)
        save_label_png(folder / f"{image_id}.png", label)
    with atomic_path(tar) as tmp:
        with tarfile.open(tmp, "w") as t:
            for image_id in ids:
                t.add(folder / f"{image_id}.png", arcname=str(SERVER_DIR / f"{image_id}.png"))


def run(job: Job) -> None:
    index, ids = split_index(job)
    pack_test(index, ids, job.input.pred, job.output.tar.parent, job.output.tar)


if __name__ == "__main__":
    main(run)
