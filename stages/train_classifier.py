"""Rule train_classifier: the Puzzle-CAM classifier for one ablation variant."""
from __future__ import annotations

import logging
from pathlib import Path

from stages import StageError, cli, distributed
from stages.data.datasets import TrainSamples
from stages.data.index import missing_classes_warning
from stages.engine import fit, reference_param_groups, save_trained
from stages.models.backbone import weights_tag
from stages.models.factory import build_classifier
from stages.ops.puzzle import VARIANTS, alpha_at, merge, puzzle_losses, tile
from stages.staging import inputs_key, settings_key

log = logging.getLogger("stages")


def puzzle_step(model, variant, alpha_max: float, ramp: float):
    """One training step's loss terms: full image, and (for puzzle variants) its 4 tiles merged back."""

    def step(batch, iteration, max_iteration):
        x, y = batch["image"], batch["label"]
        cam = model(x)
        cam_re = merge(model(tile(x))) if variant.puzzle else None
        alpha = alpha_at(iteration, max_iteration, alpha_max, ramp)
        return puzzle_losses(cam, cam_re, y, variant, alpha)

    return step


def train_classifier(index, ids, variant_name: str, cfg: dict, rt, out: Path, checkpoint: Path) -> list[dict]:
    if variant_name not in VARIANTS:
        raise StageError(f"variant: unknown {variant_name!r} (known: {', '.join(VARIANTS)})")
    variant = VARIANTS[variant_name]
    missing = index.classes_without_images(ids)
    if missing:
        log.warning("train_classifier[%s]: %s", variant_name, missing_classes_warning(missing, "the training images"))
    model = build_classifier(cfg, index.num_classes)
    data = TrainSamples([index.image_path(i) for i in ids], cfg, rt.seed,
                        labels=[index.labels[i] for i in ids], num_classes=index.num_classes, max_side=index.max_side)
    # the labels and images themselves, not only their ids: a checkpoint trained on other contents is not resumed
    key = settings_key(cfg, variant_name, rt.seed, rt.precision, ids, data.labels, inputs_key(*data.image_paths))
    groups = reference_param_groups(model, model.is_new, cfg)
    history = fit(model, groups, data, lambda net: puzzle_step(net, variant, cfg["alpha_max"], cfg["alpha_ramp"]), cfg, rt,
                  checkpoint, key, f"train_classifier[{variant_name}]")
    meta = {"stage": "train_classifier", "variant": variant_name, "backbone": cfg["backbone"],
            "pretrained": weights_tag(cfg["backbone"], cfg.get("pretrained", False), cfg.get("pretrained_path")),
            "classes": index.classes, "config": cfg, "seed": rt.seed, "precision": rt.precision}
    save_trained(out, model, meta, history, checkpoint)
    return history


def add_arguments(p):
    cli.add_split_arguments(p, "ids to train on")
    p.add_argument("--variant", required=True, help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--out", required=True, type=Path, help="model.pt (history.csv is written beside it)")
    p.add_argument("--checkpoint", required=True, type=Path, help="resume checkpoint, kept until the model is written")


def run(args):
    rt = cli.runtime(args, autotune=True)  # the crops repeat one shape
    index, ids = cli.split_index(args)
    with distributed.process_group(rt.device, rt.seed):
        train_classifier(index, ids, args.variant, args.cfg, rt, args.out, args.checkpoint)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
