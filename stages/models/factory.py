"""The one place the three networks are made: from a stage's config section for training, or rebuilt from a
trained model.pt and its sidecar for inference (model.pt holds every weight, so nothing is downloaded)."""
from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from stages.models.affinity import AffinityNet
from stages.models.classifier import CAMClassifier
from stages.models.segmentation import create_deeplab
from stages.utils.io import load_model


def build_classifier(cfg: dict, num_classes: int) -> CAMClassifier:
    return CAMClassifier(cfg["backbone"], num_classes, cfg["pretrained"], cfg["pretrained_path"])


def build_affinity_net(cfg: dict, backbone: str, pretrained: bool = False) -> AffinityNet:
    return AffinityNet(backbone, cfg["head_channels"], pretrained, cfg["pretrained_path"] if pretrained else None,
                       canvas=cfg["crop_size"], stem=cfg["stem"])


def build_deeplab(cfg: dict, num_classes: int, pretrained: bool | None = None):
    pretrained = cfg["pretrained"] if pretrained is None else pretrained
    return create_deeplab(cfg["encoder"], num_classes + 1, cfg["decoder_channels"], pretrained,
                          cfg["pretrained_path"] if pretrained else None,
                          cfg["aspp_rates"], cfg["aspp_separable"], cfg["frozen_bn"],
                          cfg["dropout"])


def rebuild(path, build: Callable[[dict], nn.Module]) -> nn.Module:
    """The trained model at ``path``: ``build(sidecar)`` makes the network without pretrained weights, then
    model.pt's weights are loaded into it."""
    state, meta = load_model(path)
    model = build(meta)
    model.load_state_dict(state)
    return model


def load_classifier(path, num_classes: int, rt) -> nn.Module:
    no_weights = {"pretrained": False, "pretrained_path": None}
    return rt.inference_model(rebuild(path, lambda meta: build_classifier({**meta["config"], **no_weights}, num_classes)))


def load_affinity_net(path, rt) -> nn.Module:
    return rt.inference_model(rebuild(path, lambda meta: build_affinity_net(meta["config"], meta["backbone"])))


def load_deeplab(path, num_classes: int, rt) -> nn.Module:
    no_dropout = {"dropout": [0.0, 0.0, 0.0]}  # inference computes in eval mode, where dropout does nothing
    model = rebuild(path, lambda meta: build_deeplab({**meta["config"], **no_dropout}, num_classes, pretrained=False))
    return rt.place(model.eval())
