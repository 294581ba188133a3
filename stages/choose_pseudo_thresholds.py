"""Rule choose_pseudo_thresholds: the random walk's beta and the pseudo labels' background threshold, one per class,
from the walk of each candidate beta and the classifier (``thresholds: auto``) or from a few masks (``masks``).

Writes {how, criterion, images, values: {random_walk: {beta}, pseudo_labels: {threshold}}, betas, classes, warnings}:
rules random_walk and pseudo_labels read it as an input (stages/ops/thresholds.py: the criteria).
"""
from __future__ import annotations

import logging

import numpy as np

from stages import StageError
from stages.choose_affinity_thresholds import masked_cams, measured_images, record, save
from stages.core.job import Job, main, split_index
from stages.core.runtime import job_runtime
from stages.data.voc import resize_labels
from stages.models.factory import load_affinity_net, load_classifier
from stages.ops.thresholds import PUBLISHED, Curves, TooFewImages, beta_score, candidates, choose, measure
from stages.random_walk import propagate_cams
from stages.utils.io import load_npz
from stages.utils.progress import track

log = logging.getLogger("stages")


def choose_pseudo_thresholds(inputs: list[tuple], names: list[str], classifier, affinity, cfg: dict, walk: dict,
                             how: str, rt, split: str | None = None) -> dict:
    """The record of beta and the pseudo labels' thresholds from ``inputs``: (image, cam_s4, class ids, mask at the
    image's size or None) per image; each beta of ``cfg['betas']`` (the configured one where empty) walks them."""
    criterion = "masks" if how == "masks" else cfg["criterion"]
    published = f"threshold {PUBLISHED['threshold']}"
    best, scores = None, {}
    for beta in cfg["betas"] or [walk["beta"]]:
        curves = Curves(candidates(cfg), len(names))
        samples = ((img, propagate_cams(affinity, img, cam_s4, {**walk, "beta": beta}, rt), keys, mask)
                   for img, cam_s4, keys, mask in inputs)
        measure(curves, track(samples, f"choose_pseudo_thresholds: beta {beta}", total=len(inputs)),
                classifier if criterion == "deletion" else None, rt)
        try:
            choice = choose(curves, names, criterion, cfg, "choose_pseudo_thresholds", published)
        except TooFewImages as e:
            raise StageError(f"thresholds: masks: split {split}: {e}") from None
        scores[beta] = beta_score(curves, choice, names, criterion)
        if best is None or scores[beta] > scores[best[0]]:
            best = (beta, choice)
    beta, choice = best
    threshold = {**choice.t_star, **{n: PUBLISHED["threshold"] for n, c in choice.classes.items()
                                     if c["source"] == "published"}}
    values = {"random_walk": {"beta": beta}, "pseudo_labels": {"threshold": threshold}}
    return {**record(how, criterion, inputs, values, choice, split), "betas": {str(b): s for b, s in scores.items()}}


def run(job: Job) -> None:
    rt = job_runtime(job)
    index, train_ids = split_index(job)
    p = job.params
    classifier = load_classifier(job.input.classifier, index.num_classes, rt)
    ids, split = measured_images(job, index, train_ids)
    if p.how == "masks":
        inputs = [(img, cam_s4, keys, resize_labels(mask, img.shape))
                  for img, _, cam_s4, keys, mask in masked_cams(index, ids, classifier, p.cams, rt)]
    else:
        inputs = [(index.read_image(i), load_npz(job.input.cams / f"{i}.npz")["cam_s4"].astype(np.float32),
                   index.labels[i], None) for i in ids]
    affinity = load_affinity_net(job.input.affinity, rt)
    save(job, choose_pseudo_thresholds(inputs, index.classes, classifier, affinity, p.cfg, p.walk, p.how, rt, split))


if __name__ == "__main__":
    main(run)
