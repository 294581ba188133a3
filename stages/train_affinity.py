"""Rule train_affinity: AffinityNet (boundary map) from the affinity labels' pixel pairs."""
from __future__ import annotations

from stages.core.job import Job, main
from stages.core.staging import file_digest
from stages.core.trainer import Recipe, Training, train
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


def affinity_recipe(cfg: dict, backbone: str, pretrained: bool = False) -> Recipe:
    """AffinityNet of the ``affinity`` section on ``backbone``, its parameter group and its step: one group, every
    head parameter decayed, as the reference trains IRN's boundary branch (the backbone stays frozen)."""
    return Recipe(lambda: build_affinity_net(cfg, backbone, pretrained),
                  lambda m: [{"params": m.head_parameters(), "lr": cfg["lr"], "weight_decay": cfg["weight_decay"]}],
                  lambda net: affinity_step(net, cfg["radius"]))


def affinity_training(job: Job, index, ids, rt) -> Training:
    cfg, classifier = job.params.cfg, job.input.classifier
    cls_state, cls_meta = load_model(classifier)
    backbone = cls_meta["backbone"]
    from_classifier = cfg["backbone_init"] == "classifier"
    recipe = affinity_recipe(cfg, backbone, pretrained=not from_classifier)
    model = recipe.build()
    if from_classifier:
        model.backbone.load_state_dict({k[len("backbone."):]: v for k, v in cls_state.items() if k.startswith("backbone.")})
        frozen = f"classifier:{classifier}"
    else:
        frozen = weights_tag(backbone, True, cfg["pretrained_path"])
    labels = job.input.affinity_labels
    data = TrainSamples([index.image_path(i) for i in ids], cfg, rt.seed, masks=[labels / f"{i}.png" for i in ids],
                        max_side=index.max_side)
    return Training(model, recipe.param_groups(model), data, recipe.make_step,
                    meta={"backbone": backbone, "pretrained": frozen}, key=(file_digest(classifier),))


def run(job: Job) -> list[dict]:
    return train(job, affinity_training)


if __name__ == "__main__":
    main(run)
