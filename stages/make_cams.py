"""Rule make_cams: multi-scale + flip CAMs of every training image, one npz per image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stages.core.job import Job, main, split_index
from stages.core.runtime import job_runtime
from stages.core.staging import StagedOutputs, inputs_key
from stages.data.transforms import normalize
from stages.models.factory import load_classifier
from stages.ops.cam import multiscale_cams
from stages.utils.batches import same_size_batches
from stages.utils.io import save_npz
from stages.utils.progress import track

# images per forward (each with its flip); VOC's sizes repeat, so most batches fill up
BATCH_SIZE = 4


def batched_cams(model, images, classes: dict, cfg: dict, rt, batch_size: int = BATCH_SIZE):
    """(id, class ids, (cam, cam_s4)) for each (id, RGB image), several same-size images per forward."""
    for batch in same_size_batches(images, batch_size):
        batch_ids = [i for i, _ in batch]
        x = torch.stack([normalize(img) for _, img in batch]).to(rt.device, non_blocking=True)
        keys = [classes[i] for i in batch_ids]
        yield from zip(batch_ids, keys, multiscale_cams(model, x, cfg["scales"], cfg["flip"], keys, rt.autocast))


def make_cams(index, ids, model_path: Path, cfg: dict, rt, out: Path, batch_size: int = BATCH_SIZE) -> None:
    staged = StagedOutputs(out, ".npz", cfg, ids, inputs_key(model_path),
                           sources={i: [index.image_path(i)] for i in ids})
    model = load_classifier(model_path, index.num_classes, rt)
    todo = staged.todo(ids)
    images = ((i, index.read_image(i)) for i in todo)
    cams = batched_cams(model, images, index.labels, cfg, rt, batch_size)
    for image_id, keys, (cam, cam_s4) in track(cams, "make_cams", total=len(todo)):
        save_npz(staged.path(image_id), keys=np.asarray(keys, np.int64),
                 cam=cam.numpy().astype(np.float16), cam_s4=cam_s4.numpy().astype(np.float16))
    staged.commit()


def run(job: Job) -> None:
    rt = job_runtime(job)
    index, ids = split_index(job)
    make_cams(index, ids, job.input.model, job.params.cfg, rt, job.output.cams)


if __name__ == "__main__":
    main(run)
