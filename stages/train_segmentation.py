"""Rule train_segmentation: DeepLabv3+ on pseudo labels (or, for the upper bound, on the ground-truth masks)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch.nn.functional as F

from stages import cli, distributed
from stages.data.datasets import TrainSamples
from stages.data.voc import IGNORE
from stages.engine import fit, reference_param_groups, save_trained
from stages.io import load_model
from stages.models.backbone import weights_tag
from stages.models.factory import build_deeplab
from stages.models.segmentation import is_new, load_encoder_from_classifier
from stages.staging import file_digest, inputs_key, settings_key

log = logging.getLogger("stages")


def segmentation_step(model):
    def step(batch, iteration, max_iteration):
        logits = model(batch["image"])
        return {"total": F.cross_entropy(logits.float(), batch["mask"], ignore_index=IGNORE)}

    return step


def train_segmentation(index, ids, masks: Path | None, classifier: Path | None, cfg: dict, rt, out: Path, checkpoint: Path):
    """``masks`` is a folder of pseudo-label PNGs, or None for the ground-truth masks."""
    model = build_deeplab(cfg, index.num_classes)
    if classifier is not None:
        state, _ = load_model(classifier)
        log.info("train_segmentation: encoder starts from %s (%d tensors)", classifier, load_encoder_from_classifier(model, state))
    mask_paths = [masks / f"{i}.png" for i in ids] if masks is not None else [index.mask_path(i) for i in ids]
    data = TrainSamples([index.image_path(i) for i in ids], cfg, rt.seed, masks=mask_paths, max_side=index.max_side)
    # the masks' and images' sizes and mtimes and the classifier's bytes: a checkpoint trained on other inputs is not resumed
    key = settings_key(cfg, rt.seed, rt.precision, ids, inputs_key(*data.image_paths, *data.mask_paths),
                       file_digest(classifier) if classifier is not None else None)
    history = fit(model, reference_param_groups(model, is_new, cfg), data, segmentation_step, cfg, rt, checkpoint, key,
                  "train_segmentation")
    start = (f"classifier:{classifier}" if classifier is not None
             else weights_tag(cfg["encoder"], cfg.get("pretrained", False), cfg.get("pretrained_path")))
    meta = {"stage": "train_segmentation", "masks": str(masks) if masks else "ground_truth", "encoder": cfg["encoder"],
            "pretrained": start,
            "classes": index.classes, "config": cfg, "seed": rt.seed, "precision": rt.precision}
    save_trained(out, model, meta, history, checkpoint)


def add_arguments(p):
    cli.add_split_arguments(p)
    p.add_argument("--masks", type=Path, default=None, help="pseudo-label folder; omit to train on the ground-truth masks")
    p.add_argument("--classifier", type=Path, default=None, help="start the encoder from this classifier's backbone")
    p.add_argument("--out", required=True, type=Path, help="model.pt (history.csv is written beside it)")
    p.add_argument("--checkpoint", required=True, type=Path)


def run(args):
    rt = cli.runtime(args, autotune=True)  # the crops repeat one shape
    index, ids = cli.split_index(args)
    with distributed.process_group(rt.device, rt.seed):
        train_segmentation(index, ids, args.masks, args.classifier, args.cfg, rt, args.out, args.checkpoint)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
