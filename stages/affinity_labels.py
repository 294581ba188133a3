"""Rule affinity_labels: confident foreground/background from the CAMs, refined by dense CRF.

label = the class where the CRF-refined map at ``fg_threshold`` says a class, 0 where
it and the map at ``bg_threshold`` both say background, 255 (unknown) elsewhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core.job import Job, main, split_index
from stages.core.parallel import label_images
from stages.data.voc import IGNORE
from stages.ops.cam import threshold_argmax, with_background
from stages.ops.crf import crf_labels


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


def run(job: Job) -> None:
    index, ids = split_index(job)
    affinity_labels(index, ids, job.input.cams, job.params.cfg, job.output.labels, job.threads)


if __name__ == "__main__":
    main(run)
