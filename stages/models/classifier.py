"""The Puzzle-CAM classifier: backbone -> 1x1 conv (no bias) -> raw class maps A; logits = GAP(A)."""
from __future__ import annotations

import torch
import torch.nn as nn

from stages.models.backbone import create_backbone


class CAMClassifier(nn.Module):
    def __init__(self, backbone: str, num_classes: int, pretrained: bool = False, pretrained_path: str | None = None):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, pretrained_path)
        self.classifier = nn.Conv2d(self.backbone.feature_info.channels()[-1], num_classes, 1, bias=False)
        nn.init.kaiming_normal_(self.classifier.weight)  # as the reference initialises its new head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class activation maps (B, C, H/16, W/16); no ReLU, as in training."""
        return self.classifier(self.backbone(x)[-1])

    @staticmethod
    def is_new(name: str) -> bool:
        """Parameters trained from scratch (the 1x1 head), as opposed to the backbone's."""
        return not name.startswith("backbone.")
