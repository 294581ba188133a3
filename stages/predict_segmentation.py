"""Rule predict_segmentation: multi-scale + flip DeepLabv3+ inference (+ dense CRF) -> palette PNGs."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from stages.core.job import Job, main, runtime, split_index
from stages.core.parallel import imap
from stages.core.staging import StagedOutputs, inputs_key
from stages.data.transforms import normalize
from stages.data.voc import read_image, resize_labels
from stages.models.factory import load_deeplab
from stages.models.segmentation import multiscale_logits
from stages.ops.crf import crf_probs
from stages.utils.io import save_label_png
from stages.utils.progress import track


def _finish(job, cfg):
    """Dense CRF on the class probabilities (if enabled), argmax, PNG at the image's own size."""
    image_path, max_side, size, probs, out_path = job
    if cfg["crf"]["iterations"] > 0:
        probs = crf_probs(read_image(image_path, max_side), probs.astype(np.float32), cfg["crf"])
    save_label_png(out_path, resize_labels(np.argmax(probs, axis=0).astype(np.uint8), size))


def predict_segmentation(index, ids, model_path: Path, cfg: dict, rt, out: Path, processes: int) -> None:
    staged = StagedOutputs(out, ".png", cfg, ids, inputs_key(model_path))
    todo = staged.todo(ids)
    model = load_deeplab(model_path, index.num_classes, rt)

    def jobs():
        for image_id in todo:
            x = normalize(index.read_image(image_id)).to(rt.device)
            probs = torch.softmax(multiscale_logits(model, x, cfg["scales"], cfg["flip"], rt.autocast), 0)
            yield (index.image_path(image_id), index.max_side, index.size(image_id), probs.cpu().numpy().astype(np.float16),
                   staged.path(image_id))

    for _ in track(imap(functools.partial(_finish, cfg=cfg), jobs(), processes), "predict_segmentation", total=len(todo)):
        pass
    staged.commit()


def run(job: Job) -> None:
    rt = runtime(job)
    index, ids = split_index(job)
    predict_segmentation(index, ids, job.input.model, job.params.cfg, rt, job.output.predictions, job.threads)


if __name__ == "__main__":
    main(run)
