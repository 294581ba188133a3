"""The Puzzle module: tile an image into 2x2 pieces, merge the pieces' maps back, and the losses.

    L = L_cls + L_p-cls + alpha * L_re,   alpha ramped linearly 0 -> alpha_max over
                                          the first ``ramp`` fraction of iterations.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def tile(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (4B, C, H/2, W/2): the 2x2 non-overlapping tiles, row-major, tile-major."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"puzzle tiling needs an even height and width, got {h}x{w}")
    x = x.reshape(b, c, 2, h // 2, 2, w // 2)
    return x.permute(2, 4, 0, 1, 3, 5).reshape(4 * b, c, h // 2, w // 2)


def merge(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`tile`: (4B, C, h, w) -> (B, C, 2h, 2w)."""
    n, c, h, w = t.shape
    b = n // 4
    t = t.reshape(2, 2, b, c, h, w)
    return t.permute(2, 3, 0, 4, 1, 5).reshape(b, c, 2 * h, 2 * w)


@dataclass(frozen=True)
class Variant:
    """Which Puzzle-CAM losses a classifier trains with (the paper's Table 1 rows)."""

    p_cls: bool
    re: bool

    @property
    def puzzle(self) -> bool:
        return self.p_cls or self.re


VARIANTS = {
    "baseline": Variant(p_cls=False, re=False),
    "pcls": Variant(p_cls=True, re=False),
    "re": Variant(p_cls=False, re=True),
    "puzzle": Variant(p_cls=True, re=True),
}


def alpha_at(iteration: int, max_iteration: int, alpha_max: float, ramp: float) -> float:
    """The reconstruction-loss weight: linear from 0 to ``alpha_max`` over ``ramp * max_iteration``."""
    return min(alpha_max * iteration / (max_iteration * ramp), alpha_max)


def classification_loss(cam: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MultiLabelSoftMargin on the global average of a raw CAM (B, C, h, w)."""
    return F.multilabel_soft_margin_loss(cam.float().mean(dim=(2, 3)), y)


def reconstruction_loss(cam: torch.Tensor, cam_re: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over all elements of |A^s - A^re| * y: only the image's classes contribute."""
    return ((cam.float() - cam_re.float()).abs() * y[:, :, None, None]).mean()


def puzzle_losses(cam, cam_re, y, variant: Variant, alpha: float) -> dict[str, torch.Tensor]:
    """Loss terms and their weighted total; ``cam_re`` may be None for the baseline."""
    losses = {"cls": classification_loss(cam, y)}
    total = losses["cls"]
    if variant.p_cls:
        losses["p_cls"] = classification_loss(cam_re, y)
        total = total + losses["p_cls"]
    if variant.re:
        losses["re"] = reconstruction_loss(cam, cam_re, y)
        total = total + alpha * losses["re"]
    losses["total"] = total
    return losses
