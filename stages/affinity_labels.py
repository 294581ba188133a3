"""Rule affinity_labels: confident foreground/background from the CAMs, refined by dense CRF.

label = the class where the CRF-refined map at ``fg_threshold`` says a class, 0 where
it and the map at ``bg_threshold`` both say background, 255 (unknown) elsewhere. The
thresholds are the config's, or one per class from rule choose_affinity_thresholds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core.job import Job, main, split_index, thresholds_file
from stages.core.parallel import label_images
from stages.data.voc import IGNORE
from stages.ops.cam import threshold_argmax, with_background
from stages.ops.crf import crf_labels
from stages.ops.thresholds import chosen_config, per_class


def affinity_label(img: np.ndarray, cam: np.ndarray, keys, cfg: dict) -> np.ndarray:
    ids = with_background(keys)
    n = len(ids)
    fg = ids[crf_labels(img, threshold_argmax(cam, per_class(cfg["fg_threshold"], keys)), n, cfg["crf"])]
    bg = ids[crf_labels(img, threshold_argmax(cam, per_class(cfg["bg_threshold"], keys)), n, cfg["crf"])]
    label = fg.copy()
    label[fg == 0] = IGNORE
    label[(fg == 0) & (bg == 0)] = 0
    return label


def affinity_labels(index, ids, cams: Path, cfg: dict, out: Path, processes: int) -> None:
    label_images("affinity_labels", affinity_label, index, ids, cams, "cam", cfg, out, processes)


def run(job: Job) -> None:
    index, ids = split_index(job)
    cfg = chosen_config(job.params.cfg, thresholds_file(job), "affinity_labels", index.classes)
    affinity_labels(index, ids, job.input.cams, cfg, job.output.labels, job.threads)


if __name__ == "__main__":
    main(run)
