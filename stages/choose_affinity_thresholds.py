"""Rule choose_affinity_thresholds: the affinity labels' confident foreground and background thresholds, one per
class, from the CAMs and the classifier (``thresholds: auto``) or from a few masks (``thresholds: masks``).

Writes {how, criterion, images, values: {affinity_labels: {fg_threshold, bg_threshold}}, classes, warnings}: rule
affinity_labels reads it as an input, so a new choice reruns exactly what depends on it (stages/ops/thresholds.py:
the criteria).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stages import StageError
from stages.core.job import Job, main, split_index
from stages.core.metrics import scored_mask
from stages.core.runtime import job_runtime
from stages.data.voc import resize_labels
from stages.make_cams import batched_cams
from stages.models.factory import load_classifier
from stages.ops.thresholds import (
    PUBLISHED,
    Curves,
    TooFewImages,
    candidates,
    choose,
    confident_pair,
    measure,
    sample_ids,
)
from stages.utils.io import load_npz, write_json
from stages.utils.progress import track

log = logging.getLogger("stages")


def masked_cams(index, ids, model, cams_cfg: dict, rt):
    """(image, CAMs, stride-4 CAMs, class ids, mask at the image's own size) of each masked image, its CAMs computed
    here: the images with masks need not be the training images whose CAMs rule make_cams wrote. Each image is read
    once (a few dozen of them)."""
    images = {i: index.read_image(i) for i in ids}
    for image_id, keys, (cam, cam_s4) in batched_cams(model, images.items(), index.labels, cams_cfg, rt):
        yield images[image_id], cam.numpy(), cam_s4.numpy(), keys, scored_mask(index, image_id)


def mask_images(index, split_file: Path, n: int) -> list[str]:
    """The first ``n`` images of the split with masks that ``thresholds: masks`` chooses from."""
    ids = index.ids(split_file)[:n]
    if not ids:
        raise StageError(f"thresholds: masks: split {split_file.stem} lists no image")
    return ids


def record(how: str, criterion: str, ids, values: dict, choice, split: str | None) -> dict:
    return {"how": how, "criterion": criterion, "split": split, "images": len(ids), "values": values,
            "classes": choice.classes, "warnings": choice.warnings}


def choose_affinity_thresholds(index, ids, cams: Path | None, model, cfg: dict, how: str, rt, cams_cfg: dict,
                               split: str | None = None) -> dict:
    """The record of the affinity labels' thresholds: auto measures the CAMs of ``cams`` (of the training ``ids``)
    by deletion with ``model``; masks computes the CAMs of ``ids`` (images with masks) and scores them."""
    curves = Curves(candidates(cfg), index.num_classes)
    if how == "masks":
        samples = ((img, cam, keys, resize_labels(mask, cam.shape[1:]))
                   for img, cam, _, keys, mask in masked_cams(index, ids, model, cams_cfg, rt))
        criterion = "masks"
        measure(curves, track(samples, "choose_affinity_thresholds", total=len(ids)))
    else:
        criterion = cfg["criterion"]
        samples = ((index.read_image(i), load_npz(cams / f"{i}.npz")["cam"].astype(np.float32), index.labels[i], None)
                   for i in ids)
        measure(curves, track(samples, "choose_affinity_thresholds", total=len(ids)),
                model if criterion == "deletion" else None, rt)
    published = f"fg {PUBLISHED['fg_threshold']} / bg {PUBLISHED['bg_threshold']}"
    try:
        choice = choose(curves, index.classes, criterion, cfg, "choose_affinity_thresholds", published)
    except TooFewImages as e:
        raise StageError(f"thresholds: masks: split {split}: {e}") from None
    pairs = {name: confident_pair(t, cfg) for name, t in choice.t_star.items()}
    fallback = {name: (PUBLISHED["fg_threshold"], PUBLISHED["bg_threshold"])
                for name, c in choice.classes.items() if c["source"] == "published"}
    pairs.update(fallback)
    values = {"affinity_labels": {"fg_threshold": {n: p[0] for n, p in pairs.items()},
                                  "bg_threshold": {n: p[1] for n, p in pairs.items()}}}
    return record(how, criterion, ids, values, choice, split)


def measured_images(job: Job, index, train_ids: list[str]) -> tuple[list[str], str | None]:
    """The images a choose rule measures and the split with masks they come from: under ``masks`` the first
    ``mask_images`` of that split, under ``auto`` a sample of the training images (no split named)."""
    if job.params.how == "masks":
        return mask_images(index, job.input.mask_split, job.params.cfg["mask_images"]), job.params.cfg["split"]
    return sample_ids(train_ids, job.params.cfg["sample"], job.params.seed), None


def save(job: Job, result: dict) -> None:
    """The choice to the rule's file, its warnings to the log (and so to the run's summary)."""
    for line in result["warnings"]:
        log.warning("%s", line)
    write_json(job.output.thresholds, result)


def run(job: Job) -> None:
    rt = job_runtime(job)
    index, train_ids = split_index(job)
    p = job.params
    model = load_classifier(job.input.classifier, index.num_classes, rt)
    ids, split = measured_images(job, index, train_ids)
    save(job, choose_affinity_thresholds(index, ids, job.input.get("cams"), model, p.cfg, p.how, rt, p.cams, split))


if __name__ == "__main__":
    main(run)
