"""Rule train_affinity: AffinityNet (boundary map) from the affinity labels' pixel pairs."""
from __future__ import annotations

from stages.core.job import Job, main
from stages.core.staging import file_digest
from stages.core.trainer import Training, train
from stages.data.datasets import TrainSamples
from stages.models.backbone import weights_tag
from stages.models.factory import build_affinity_net
from stages.ops.affinity import affinity_loss, downsample_labels, pair_labels, path_affinity
from stages.utils.io import load_model


def affinity_step(model, radius: int):
    def step(batch, iteration, max_iteration):
        x, label = batch["image"], batch["mask"]
        logits = model(x)
        label4 = downsample_labels(label, logits.shape[-2:])
        aff = path_affinity(logits.float().sigmoid(), radius)
        return affinity_loss(aff, *pair_labels(label4, radius))

    return step


def affinity_training(job: Job, index, ids, rt) -> Training:
    cfg, classifier = job.params.cfg, job.input.classifier
    cls_state, cls_meta = load_model(classifier)
    backbone = cls_meta["backbone"]
    if cfg["backbone_init"] == "classifier":
        model = build_affinity_net(cfg, backbone)
        model.backbone.load_state_dict({k[len("backbone."):]: v for k, v in cls_state.items() if k.startswith("backbone.")})
        frozen = f"classifier:{classifier}"
    else:
        model = build_affinity_net(cfg, backbone, pretrained=True)
        frozen = weights_tag(backbone, True, cfg["pretrained_path"])
    labels = job.input.affinity_labels
    data = TrainSamples([index.image_path(i) for i in ids], cfg, rt.seed, masks=[labels / f"{i}.png" for i in ids],
                        max_side=index.max_side)
    # one group, every head parameter decayed, as the reference trains IRN's boundary branch
    groups = [{"params": model.head_parameters(), "lr": cfg["lr"], "weight_decay": cfg["weight_decay"]}]
    return Training(model, groups, data, lambda net: affinity_step(net, cfg["radius"]),
                    meta={"backbone": backbone, "pretrained": frozen}, key=(file_digest(classifier),))


def run(job: Job) -> list[dict]:
    return train(job, affinity_training)


if __name__ == "__main__":
    main(run)
