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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class activation maps (B, C, H/16, W/16); no ReLU, as in training."""
        return self.classifier(self.backbone(x)[-1])

    def param_groups(self, lr: float, new_layer_lr_mult: float = 10.0) -> list[dict]:
        return [
            {"params": list(self.backbone.parameters()), "lr": lr},
            {"params": list(self.classifier.parameters()), "lr": lr * new_layer_lr_mult},
        ]
