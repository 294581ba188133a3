"""Rule pseudo_labels: random-walk maps -> background threshold -> argmax (-> dense CRF) -> palette PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages import cli
from stages.ops.cam import threshold_argmax, with_background
from stages.ops.crf import crf_labels
from stages.parallel import label_images


def pseudo_label(img: np.ndarray, rw: np.ndarray, keys, cfg: dict) -> np.ndarray:
    ids = with_background(keys)
    idx = threshold_argmax(rw, cfg["threshold"])
    if cfg["crf"]["iterations"] > 0:
        idx = crf_labels(img, idx, len(ids), cfg["crf"])
    return ids[idx]


def pseudo_labels(index, ids, rw: Path, cfg: dict, out: Path, processes: int) -> None:
    label_images("pseudo_labels", pseudo_label, index, ids, rw, "rw", cfg, out, processes)


def add_arguments(p):
    cli.add_split_arguments(p)
    p.add_argument("--rw", required=True, type=Path, help="random_walk output folder")
    p.add_argument("--out", required=True, type=Path)


def run(args):
    index, ids = cli.split_index(args)
    pseudo_labels(index, ids, args.rw, args.cfg, args.out, args.threads or 1)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
