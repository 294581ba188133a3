"""Rule train_segmentation: DeepLabv3+ on the pseudo labels (wildcard ``masks``: pseudo_labels) or, for the fully
supervised upper bound, on the ground-truth masks (ground_truth)."""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from stages.core.engine import reference_param_groups
from stages.core.job import Job, main
from stages.core.metrics import confusion, score
from stages.core.staging import file_digest
from stages.core.trainer import Recipe, Training, scored_ids, train
from stages.data.datasets import TrainSamples
from stages.data.transforms import normalize
from stages.data.voc import IGNORE, read_mask, resize_labels
from stages.models.backbone import weights_tag
from stages.models.factory import build_deeplab
from stages.models.segmentation import is_new, load_encoder_from_classifier, multiscale_logits
from stages.utils.io import load_model

log = logging.getLogger("stages")


def segmentation_step(model):
    def step(batch, iteration, max_iteration):
        logits = model(batch["image"])
        return {"total": F.cross_entropy(logits.float(), batch["mask"], ignore_index=IGNORE)}

    return step


@torch.no_grad()
def segmentation_scores(model, index, ids: list[str], rt) -> dict[str, float]:
    """The mIoU of ``ids`` at one scale, without flip or CRF."""
    n = index.num_classes + 1
    conf = np.zeros((n, n), np.int64)
    for image_id in ids:
        x = normalize(index.read_image(image_id)).to(rt.device)[None]
        pred = multiscale_logits(model, x, [1.0], False, rt.autocast)[0].argmax(0).cpu().numpy().astype(np.uint8)
        gt = read_mask(index.mask_path(image_id))
        conf += confusion(resize_labels(pred, gt.shape), gt, n)
    return {"miou": score(conf, index.names_with_background)["miou"]}


def segmentation_recipe(cfg: dict, num_classes: int) -> Recipe:
    """DeepLabv3+ of the ``segmentation`` section, its parameter groups and its step."""
    return Recipe(lambda: build_deeplab(cfg, num_classes), lambda m: reference_param_groups(m, is_new, cfg),
                  segmentation_step)


def segmentation_training(job: Job, index, ids, rt) -> Training:
    """Training masks: the pseudo-label folder (input ``masks``), or the ground truth where the rule gives none."""
    cfg = job.params.cfg
    recipe = segmentation_recipe(cfg, index.num_classes)
    model = recipe.build()
    classifier = job.input.get("classifier")
    if classifier is not None:
        state, _ = load_model(classifier)
        log.info("train_segmentation: encoder starts from %s (%d tensors)", classifier, load_encoder_from_classifier(model, state))
    masks = job.input.get("masks")
    mask_paths = [masks / f"{i}.png" for i in ids] if masks is not None else [index.mask_path(i) for i in ids]
    data = TrainSamples([index.image_path(i) for i in ids], cfg, rt.seed, masks=mask_paths, max_side=index.max_side)
    start = (f"classifier:{classifier}" if classifier is not None
             else weights_tag(cfg["encoder"], cfg["pretrained"], cfg["pretrained_path"]))
    scored = scored_ids(index, ids)
    return Training(model, recipe.param_groups(model), data, recipe.make_step,
                    meta={"masks": str(masks) if masks else "ground_truth", "encoder": cfg["encoder"], "pretrained": start,
                          # new photos are segmented at most this size by default (rule segment)
                          "image_max_side": max(max(index.work_size(i)) for i in ids)},
                    key=(file_digest(classifier) if classifier is not None else None,),
                    evaluate=(lambda m: segmentation_scores(m, index, scored, rt)) if scored else None)


def run(job: Job) -> list[dict]:
    return train(job, segmentation_training)


if __name__ == "__main__":
    main(run)
