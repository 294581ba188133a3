"""AffinityNet as IRN's boundary branch: a frozen backbone, 1x1 conv + GroupNorm heads on all five stages at
stride 4 (the stem's features max-pooled as the backbone pools them; deeper ones upsampled by their integer factor
and cropped, then ReLU'd, as the reference), concatenated, one boundary logit per pixel."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from stages.models.backbone import create_backbone

# the stride the boundary map is at
EDGE_STRIDE = 4
# the first head's input: the stem's features after its max-pool (the reference), or at stride 2 (finer edges, which
# help small images: the embedded default's 96-pixel ones)
STEMS = ("pooled", "strided")


class AffinityNet(nn.Module):
    def __init__(self, backbone: str, head_channels: int = 32, pretrained: bool = False, pretrained_path: str | None = None,
                 canvas: int = 0, stem: str = "pooled"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"AffinityNet stem {stem!r}: one of {', '.join(STEMS)}")
        self.stem = stem
        self.backbone = create_backbone(backbone, pretrained, pretrained_path)
        self.backbone.requires_grad_(False)
        self.reductions = self.backbone.feature_info.reduction()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, head_channels, 1, bias=False), nn.GroupNorm(4, head_channels))
            for c in self.backbone.feature_info.channels()
        )
        self.boundary = nn.Conv2d(head_channels * len(self.heads), 1, 1, bias=True)
        # the training crop: boundary_prob pads smaller images onto it, as the reference infers on its 512 canvas
        self.canvas = canvas

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen, BatchNorm statistics included
        return self

    def head_map(self, head: nn.Module, f: torch.Tensor, reduction: int) -> torch.Tensor:
        """One head's map at stride 4, as the reference's edge layers: the stride-2 stem max-pooled first (the
        backbone's own 3x3/2 pool: the reference's first stage ends with it), deeper maps upsampled by their integer
        factor after the head and before the ReLU. With ``stem="strided"`` the stem's head sees its stride-2
        features and its map is resized to the pooled size instead."""
        if reduction < EDGE_STRIDE and self.stem == "strided":
            pooled_size = tuple(-(-n * reduction // EDGE_STRIDE) for n in f.shape[-2:])
            return F.relu(F.interpolate(head(f), size=pooled_size, mode="bilinear", align_corners=False))
        if reduction < EDGE_STRIDE:
            f = F.max_pool2d(f, 3, EDGE_STRIDE // reduction, 1)
        m = head(f)
        if reduction > EDGE_STRIDE:
            m = F.interpolate(m, scale_factor=reduction // EDGE_STRIDE, mode="bilinear", align_corners=False)
        return F.relu(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary logits (B, ceil(H/4), ceil(W/4))."""
        with torch.no_grad():
            feats = self.backbone(x)
        maps = [self.head_map(head, f.detach(), r) for head, f, r in zip(self.heads, feats, self.reductions)]
        # upsampled maps overhang the stride-4 grid by up to a cell: cropped from the bottom-right, as the reference
        h, w = min(m.shape[-2] for m in maps), min(m.shape[-1] for m in maps)
        return self.boundary(torch.cat([m[..., :h, :w] for m in maps], 1))[:, 0]

    def boundary_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary probability of an image batch (B, ceil(H/4), ceil(W/4)), logits averaged with its flip's. Each
        image and its flip are zero-padded (the mean colour) at the bottom-right onto the training crop, as training
        saw small images and the reference infers, and the map cropped back."""
        b, _, h, w = x.shape
        x = torch.cat([x, x.flip(-1)])
        x = F.pad(x, (0, max(self.canvas - w, 0), 0, max(self.canvas - h, 0)))
        logits = self(x)[..., : -(-h // EDGE_STRIDE), : -(-w // EDGE_STRIDE)]
        return torch.sigmoid((logits[:b] + logits[b:].flip(-1)) / 2)

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]
