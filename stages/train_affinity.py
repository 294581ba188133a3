"""Rule train_affinity: AffinityNet (boundary map) from the affinity labels' pixel pairs."""
from __future__ import annotations

from pathlib import Path

from stages import cli, distributed
from stages.data.datasets import TrainSamples
from stages.engine import fit, save_trained
from stages.io import load_model
from stages.models.backbone import weights_tag
from stages.models.factory import build_affinity_net
from stages.ops.affinity import affinity_loss, downsample_labels, pair_labels, path_affinity
from stages.staging import file_digest, inputs_key, settings_key


def affinity_step(model, radius: int):
    def step(batch, iteration, max_iteration):
        x, label = batch["image"], batch["mask"]
        logits = model(x)
        label4 = downsample_labels(label, logits.shape[-2:])
        aff = path_affinity(logits.float().sigmoid(), radius)
        return affinity_loss(aff, *pair_labels(label4, radius))

    return step


def train_affinity(index, ids, labels_dir: Path, classifier: Path, cfg: dict, rt, out: Path, checkpoint: Path):
    cls_state, cls_meta = load_model(classifier)
    backbone = cls_meta["backbone"]
    if cfg["backbone_init"] == "classifier":
        model = build_affinity_net(cfg, backbone)
        model.backbone.load_state_dict({k[len("backbone."):]: v for k, v in cls_state.items() if k.startswith("backbone.")})
    else:
        model = build_affinity_net(cfg, backbone, pretrained=True)
    data = TrainSamples([index.image_path(i) for i in ids], cfg, rt.seed, masks=[labels_dir / f"{i}.png" for i in ids],
                        max_side=index.max_side)
    # the affinity labels' and images' sizes and mtimes and the classifier's bytes, as in train_segmentation
    key = settings_key(cfg, rt.seed, rt.precision, ids, inputs_key(*data.image_paths, *data.mask_paths),
                       file_digest(classifier))
    # one group, every head parameter decayed, as the reference trains IRN's boundary branch
    groups = [{"params": model.head_parameters(), "lr": cfg["lr"], "weight_decay": cfg["weight_decay"]}]
    history = fit(model, groups, data, lambda net: affinity_step(net, cfg["radius"]), cfg, rt, checkpoint, key, "train_affinity")
    frozen = (f"classifier:{classifier}" if cfg["backbone_init"] == "classifier"
              else weights_tag(backbone, True, cfg.get("pretrained_path")))
    meta = {"stage": "train_affinity", "backbone": backbone, "pretrained": frozen, "classes": index.classes, "config": cfg,
            "seed": rt.seed, "precision": rt.precision}
    save_trained(out, model, meta, history, checkpoint)


def add_arguments(p):
    cli.add_split_arguments(p)
    p.add_argument("--affinity-labels", required=True, type=Path)
    p.add_argument("--classifier", required=True, type=Path, help="classifier model.pt (its backbone, frozen)")
    p.add_argument("--out", required=True, type=Path, help="model.pt (history.csv is written beside it)")
    p.add_argument("--checkpoint", required=True, type=Path)


def run(args):
    rt = cli.runtime(args, autotune=True)  # the crops repeat one shape
    index, ids = cli.split_index(args)
    with distributed.process_group(rt.device, rt.seed):
        train_affinity(index, ids, args.affinity_labels, args.classifier, args.cfg, rt, args.out, args.checkpoint)


if __name__ == "__main__":
    cli.main(run, __doc__, add_arguments)
