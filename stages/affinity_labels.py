"""Rule affinity_labels: confident foreground/background from the CAMs, refined by dense CRF.

label = the class where the CRF-refined map at ``fg_threshold`` says a class, 0 where
it and the map at ``bg_threshold`` both say background, 255 (unknown) elsewhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages import cli
from stages.data.voc import IGNORE
from stages.ops.cam import threshold_argmax, with_background
from stages.ops.crf import crf_labels
from stages.parallel import label_images


def affinity_label(img: np.ndarray, cam: np.ndarray, keys, cfg: dict) -> np.ndarray:
    ids = with_background(keys)
    n = len(ids)
    fg = ids[crf_labels(img, threshold_argmax(cam, cfg["fg_threshold"]), n, cfg["crf"])]
    bg = ids[crf_labels(img, threshold_argmax(cam, cfg["bg_threshold"]), n, cfg["crf"])]
    label = fg.copy()
    label[fg == 0] = IGNORE
    label[(fg == 0) & (bg == 0)] = 0
    return label


def affinity_labels(index, ids, cams: Path, cfg: dict, out: Path, processes: int) -> None:
    label_images("affinity_labels", affinity_label, index, ids, cams, "cam", cfg, out, processes)


def add_arguments(p):
    cli.add_split_arguments(p)
    p.add_argument("--cams", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)


def run(args):
    index, ids = cli.split_index(args)
    affinity_labels(index, ids, args.cams, args.cfg, args.out, args.threads or 1)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
