"""Rule pseudo_labels: random-walk maps -> background threshold -> argmax (-> dense CRF) -> palette PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core.job import Job, main, split_index
from stages.core.parallel import label_images
from stages.ops.cam import threshold_argmax, with_background
from stages.ops.crf import crf_labels


def pseudo_label(img: np.ndarray, rw: np.ndarray, keys, cfg: dict) -> np.ndarray:
    ids = with_background(keys)
    idx = threshold_argmax(rw, cfg["threshold"])
    if cfg["crf"]["iterations"] > 0:
        idx = crf_labels(img, idx, len(ids), cfg["crf"])
    return ids[idx]


def pseudo_labels(index, ids, rw: Path, cfg: dict, out: Path, processes: int) -> None:
    label_images("pseudo_labels", pseudo_label, index, ids, rw, "rw", cfg, out, processes)


def run(job: Job) -> None:
    index, ids = split_index(job)
    pseudo_labels(index, ids, job.input.rw, job.params.cfg, job.output.labels, job.threads)


if __name__ == "__main__":
    main(run)
