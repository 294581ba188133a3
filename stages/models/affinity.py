"""AffinityNet as IRN's boundary branch: a frozen backbone, 1x1 conv + GroupNorm heads on
all five stages, upsampled to stride 4, concatenated, one boundary logit per pixel."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from stages.models.backbone import create_backbone


class AffinityNet(nn.Module):
    def __init__(self, backbone: str, head_channels: int = 32, pretrained: bool = False, pretrained_path: str | None = None):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, pretrained_path)
        self.backbone.requires_grad_(False)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, head_channels, 1, bias=False), nn.GroupNorm(4, head_channels), nn.ReLU(inplace=True))
            for c in self.backbone.feature_info.channels()
        )
        self.boundary = nn.Conv2d(head_channels * len(self.heads), 1, 1, bias=True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen, BatchNorm statistics included
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary logits (B, H/4, W/4) (sizes rounded up)."""
        size = ((x.shape[-2] + 3) // 4, (x.shape[-1] + 3) // 4)
        with torch.no_grad():
            feats = self.backbone(x)
        maps = [F.interpolate(head(f.detach()), size=size, mode="bilinear", align_corners=False) for head, f in zip(self.heads, feats)]
        return self.boundary(torch.cat(maps, 1))[:, 0]

    def boundary_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary probability of one image batch with its flip, logits averaged (B, H/4, W/4)."""
        logits = self(torch.cat([x, x.flip(-1)]))
        b = x.shape[0]
        return torch.sigmoid((logits[:b] + logits[b:].flip(-1)) / 2)

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]
