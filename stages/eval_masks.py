"""Rules eval_pseudo_labels and eval_segmentation: mIoU of palette PNG label maps against the masks.

A label map may be at the image's own size or at the size the stages computed at (longest side
data.max_side); it is scored at the own size."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages import StageError, cli
from stages.data.voc import read_mask, resize_labels
from stages.io import read_label_png, write_json
from stages.metrics import confusion, score
from stages.progress import track


def eval_masks(index, ids, pred_dir: Path) -> dict:
    n = index.num_classes + 1
    conf = np.zeros((n, n), np.int64)
    for image_id in track(ids, "eval_masks"):
        path = pred_dir / f"{image_id}.png"
        pred = read_label_png(path)
        if pred.shape not in (index.size(image_id), index.work_size(image_id)):
            h, w = index.size(image_id)
            raise StageError(f"{path}: label map is {pred.shape[1]}x{pred.shape[0]} but its image is {w}x{h}")
        gt = read_mask(index.mask_path(image_id), index.size(image_id))
        conf += confusion(resize_labels(pred, gt.shape), gt, n)
    return {"images": len(ids), **score(conf, index.names_with_background)}


def add_arguments(p):
    cli.add_split_arguments(p)
    p.add_argument("--pred", required=True, type=Path, help="folder of <id>.png")
    p.add_argument("--stage", required=True, help="row name in the tables (pseudo_labels, segmentation, upper_bound)")
    p.add_argument("--out", required=True, type=Path)


def run(args):
    index, ids = cli.split_index(args)
    result = eval_masks(index, ids, args.pred)
    write_json(args.out, {"stage": args.stage, "split": args.split_file.stem, **result})


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
