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
from stages.core.trainer import Training, scored_ids, train
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


def segmentation_training(job: Job, index, ids, rt) -> Training:
    """Training masks: the pseudo-label folder (input ``masks``), or the ground truth where the rule gives none."""
    cfg = job.params.cfg
    model = build_deeplab(cfg, index.num_classes)
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
    return Training(model, reference_param_groups(model, is_new, cfg), data, segmentation_step,
                    meta={"masks": str(masks) if masks else "ground_truth", "encoder": cfg["encoder"], "pretrained": start},
                    key=(file_digest(classifier) if classifier is not None else None,),
                    evaluate=(lambda m: segmentation_scores(m, index, scored, rt)) if scored else None)


def run(job: Job) -> list[dict]:
    return train(job, segmentation_training)


if __name__ == "__main__":
    main(run)
