"""Rule train_classifier: the Puzzle-CAM classifier for one ablation variant (wildcard ``variant``)."""
from __future__ import annotations

import logging

import numpy as np
import torch

from stages import StageError
from stages.core.engine import Terms, reference_param_groups
from stages.core.job import Job, main
from stages.core.metrics import confusion, score
from stages.core.trainer import Recipe, Training, scored_ids, train
from stages.data.datasets import TrainSamples
from stages.data.index import missing_classes_warning
from stages.data.transforms import normalize
from stages.data.voc import read_mask, resize_labels
from stages.models.backbone import weights_tag
from stages.models.factory import build_classifier
from stages.ops.cam import cam_to_label, multiscale_cams
from stages.ops.puzzle import VARIANTS, alpha_at, merge, puzzle_losses, tile

log = logging.getLogger("stages")

# background thresholds of the per-epoch CAM score in TensorBoard (the eval_cams sweep scores the final model)
EVAL_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 17))


def puzzle_step(model, variant, alpha_max: float, ramp: float):
    """One training step's loss terms: full image, and (for puzzle variants) its 4 tiles merged back; L_re weighted
    by alpha, ramped from 0 to ``alpha_max`` over the first ``ramp`` of the iterations, and reported with them."""

    def step(batch, iteration, max_iteration):
        x, y = batch["image"], batch["label"]
        cam = model(x)
        cam_re = merge(model(tile(x))) if variant.puzzle else None
        alpha = alpha_at(iteration, max_iteration, alpha_max, ramp)
        return Terms(puzzle_losses(cam, cam_re, y, variant, alpha), {"alpha": alpha})

    return step


@torch.no_grad()
def cam_scores(model, index, ids: list[str], rt) -> dict[str, float]:
    """The CAM mIoU of ``ids`` at one scale, without flip, at the best of :data:`EVAL_THRESHOLDS`."""
    n = index.num_classes + 1
    conf = np.zeros((len(EVAL_THRESHOLDS), n, n), np.int64)
    for image_id in ids:
        x = normalize(index.read_image(image_id)).to(rt.device)[None]
        cam, _ = multiscale_cams(model, x, [1.0], False, [index.labels[image_id]], rt.autocast)[0]
        gt = read_mask(index.mask_path(image_id))
        for k, t in enumerate(EVAL_THRESHOLDS):
            conf[k] += confusion(resize_labels(cam_to_label(cam.numpy(), index.labels[image_id], t), gt.shape), gt, n)
    best = max(score(c, index.names_with_background)["miou"] for c in conf)
    return {"cam_miou": best}


def classifier_recipe(cfg: dict, num_classes: int, variant: str) -> Recipe:
    """The classifier of a variant of the ``classifier`` section, its parameter groups and its step."""
    if variant not in VARIANTS:
        raise StageError(f"variant: unknown {variant!r} (known: {', '.join(VARIANTS)})")
    return Recipe(lambda: build_classifier(cfg, num_classes), lambda m: reference_param_groups(m, m.is_new, cfg),
                  lambda net: puzzle_step(net, VARIANTS[variant], cfg["alpha_max"], cfg["alpha_ramp"]))


def classifier_training(job: Job, index, ids, rt) -> Training:
    name, cfg = job.wildcards.variant, job.params.cfg
    recipe = classifier_recipe(cfg, index.num_classes, name)
    missing = index.classes_without_images(ids)
    if missing:
        log.warning("train_classifier[%s]: %s", name, missing_classes_warning(missing, "the training images"))
    model = recipe.build()
    data = TrainSamples([index.image_path(i) for i in ids], cfg, rt.seed, labels=[index.labels[i] for i in ids],
                        num_classes=index.num_classes, max_side=index.max_side)
    scored = scored_ids(index, ids)
    return Training(
        model, recipe.param_groups(model), data, recipe.make_step,
        meta={"variant": name, "backbone": cfg["backbone"],
              "pretrained": weights_tag(cfg["backbone"], cfg["pretrained"], cfg["pretrained_path"])},
        key=(name,),
        evaluate=(lambda m: cam_scores(m, index, scored, rt)) if scored else None)


def run(job: Job) -> list[dict]:
    return train(job, classifier_training, f"train_classifier[{job.wildcards.variant}]")


if __name__ == "__main__":
    main(run)
