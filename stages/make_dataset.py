"""Rule make_dataset: write the embedded synthetic dataset in the VOC 2012 layout."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stages import StageError
from stages.core.job import Job, main
from stages.data.synthetic import SHAPES, make_sample, unknown_shapes
from stages.utils.io import atomic_dir, save_label_png
from stages.utils.progress import track


def make_dataset(out: Path, classes: list[str], cfg: dict, seed: int) -> None:
    """Generate ``cfg['splits']`` ({split: count}) into ``out`` (a VOC2012 folder), atomically."""
    bad = unknown_shapes(classes)
    if bad:
        raise StageError(f"data.classes: {bad} have no generator shape (known: {sorted(SHAPES)})")
    if cfg["part_scale"] and unknown_shapes([cfg["part_shape"]]):
        raise StageError(f"data.generate.part_shape: {cfg['part_shape']!r} is not a generator shape (known: {sorted(SHAPES)})")
    with atomic_dir(out) as tmp:
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (tmp / sub).mkdir(parents=True)
        offset = 0
        for split_index, (split, count) in enumerate(cfg["splits"].items()):
            rng = np.random.default_rng([seed, split_index])
            ids = [f"syn_{offset + i:06d}" for i in range(count)]
            offset += count
            for image_id in track(ids, f"make_dataset {split}"):
                img, mask = make_sample(rng, classes, cfg["image_size"], cfg)
                cv2.imwrite(str(tmp / "JPEGImages" / f"{image_id}.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
                save_label_png(tmp / "SegmentationClass" / f"{image_id}.png", mask)
            (tmp / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def run(job: Job) -> None:
    generate = job.params.generate
    make_dataset(job.output.root, job.params.classes, generate, generate["seed"])


if __name__ == "__main__":
    main(run)
