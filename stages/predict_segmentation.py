"""Rule predict_segmentation: multi-scale + flip DeepLabv3+ inference (+ dense CRF) -> palette PNGs at each
image's own size."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core.job import Job, main, split_index
from stages.core.runtime import job_runtime
from stages.core.segmenter import segment
from stages.core.staging import StagedOutputs, inputs_key
from stages.data.voc import resize_labels
from stages.models.factory import load_deeplab
from stages.utils.io import save_label_png
from stages.utils.progress import track


def _save(key: tuple[Path, tuple[int, int]], image: np.ndarray, label: np.ndarray) -> None:
    """In a pool worker: the label map at the image's own size."""
    path, size = key
    save_label_png(path, resize_labels(label, size))


def predict_segmentation(index, ids, model_path: Path, cfg: dict, rt, out: Path, processes: int) -> None:
    staged = StagedOutputs(out, ".png", cfg, ids, inputs_key(model_path),
                           sources={i: [index.image_path(i)] for i in ids})
    todo = staged.todo(ids)
    model = load_deeplab(model_path, index.num_classes, rt)
    images = (((staged.path(i), index.size(i)), index.read_image(i)) for i in todo)
    for _ in track(segment(model, images, cfg, rt, processes, _save), "predict_segmentation", total=len(todo)):
        pass
    staged.commit()


def run(job: Job) -> None:
    rt = job_runtime(job)
    index, ids = split_index(job)
    predict_segmentation(index, ids, job.input.model, job.params.cfg, rt, job.output.predictions, job.threads)


if __name__ == "__main__":
    main(run)
