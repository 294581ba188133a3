"""Rule make_dataset: write the embedded synthetic dataset in the VOC 2012 layout."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stages import StageError, cli
from stages.data.synthetic import SHAPES, make_sample, unknown_shapes
from stages.io import atomic_dir, save_label_png
from stages.progress import track


def make_dataset(out: Path, classes: list[str], cfg: dict, seed: int) -> None:
    """Generate ``cfg['splits']`` ({split: count}) into ``out`` (a VOC2012 folder), atomically."""
    bad = unknown_shapes(classes)
    if bad:
        raise StageError(f"data.classes: {bad} have no generator shape (known: {sorted(SHAPES)})")
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


def add_arguments(p):
    p.add_argument("--out", required=True, help="VOC2012 folder to create")
    p.add_argument("--classes", required=True, help="comma-separated class names (shape names)")


def run(args):
    make_dataset(Path(args.out), args.classes.split(","), args.cfg, args.cfg.get("seed", 0))


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
