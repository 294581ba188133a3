"""Rule pseudo_labels: random-walk maps -> background threshold (the config's, or one per class from rule
choose_pseudo_thresholds) -> argmax (-> dense CRF) -> palette PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core.job import Job, main, split_index, thresholds_file
from stages.core.parallel import label_images
from stages.ops.cam import threshold_argmax, with_background
from stages.ops.crf import crf_labels
from stages.ops.thresholds import chosen_config, per_class


def pseudo_label(img: np.ndarray, rw: np.ndarray, keys, cfg: dict) -> np.ndarray:
    ids = with_background(keys)
    idx = threshold_argmax(rw, per_class(cfg["threshold"], keys))
    if cfg["crf"]["iterations"] > 0:
        idx = crf_labels(img, idx, len(ids), cfg["crf"])
    return ids[idx]


def pseudo_labels(index, ids, rw: Path, cfg: dict, out: Path, processes: int) -> None:
    label_images("pseudo_labels", pseudo_label, index, ids, rw, "rw", cfg, out, processes)


def run(job: Job) -> None:
    index, ids = split_index(job)
    cfg = chosen_config(job.params.cfg, thresholds_file(job), "pseudo_labels", index.classes)
    pseudo_labels(index, ids, job.input.rw, cfg, job.output.labels, job.threads)


if __name__ == "__main__":
    main(run)
