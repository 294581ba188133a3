"""Pixel-pair affinities from a boundary map (IRN's inter-pixel relations).

The affinity of pixels i and j = i + d (|d| < radius) is 1 - the largest boundary
probability on the path between them; outside the map counts as boundary. The path is
IRN's: every cell whose centre lies within distance 1 of the segment i-j, so that a
one-pixel diagonal boundary cuts every path across it (a rounded thin line slips
between its cells).
"""
from __future__ import annotations

import functools

import torch

from stages.data.voc import IGNORE


@functools.cache
def displacements(radius: int) -> tuple[tuple[int, int], ...]:
    """Displacements in the half-disc 0 < |d| < radius with dy > 0 or (dy == 0 and dx > 0)."""
    out = []
    for dy in range(0, radius):
        for dx in range(-radius + 1, radius):
            if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius:
                out.append((dy, dx))
    return tuple(out)


@functools.cache
def path(d: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """The offsets on the path from (0, 0) to ``d``, both ends included, as IRN's PathIndex defines it.

    The cells of the bounding box of (0, 0) and ``d`` whose distance to the line through them is below 1:
    |dy * x - dx * y| / |d| < 1, compared in integers."""
    dy, dx = d
    length_sq = dy * dy + dx * dx
    return tuple(
        (y, x)
        for y in range(min(0, dy), max(0, dy) + 1)
        for x in range(min(0, dx), max(0, dx) + 1)
        if (dy * x - dx * y) ** 2 < length_sq
    )


def shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """out[..., i, j] = x[..., i + dy, j + dx], ``fill`` where that falls outside."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def path_affinity(boundary: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, H, W) boundary probabilities -> (B, D, H, W) affinities for :func:`displacements`."""
    cache = {}

    def shifted(o):
        if o not in cache:
            cache[o] = shift(boundary, o[0], o[1], 1.0)
        return cache[o]

    maxes = [torch.stack([shifted(o) for o in path(d)]).amax(0) for d in displacements(radius)]
    return 1.0 - torch.stack(maxes, dim=1)


def downsample_labels(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) labels -> (B, h, w) by PIL's nearest rule, as the reference shrinks them to the boundary map:
    output cell i takes input pixel floor((i + 1/2) H / h), the centre of its block (4i + 2 at stride 4),
    where torch's nearest takes the block's corner (4i)."""
    h, w = label.shape[-2:]
    rows = ((torch.arange(size[0], device=label.device) + 0.5) * (h / size[0])).long().clamp_(max=h - 1)
    cols = ((torch.arange(size[1], device=label.device) + 0.5) * (w / size[1])).long().clamp_(max=w - 1)
    return label[..., rows[:, None], cols[None, :]]


def source_window(h: int, w: int, radius: int, device=None) -> torch.Tensor:
    """(H, W): the pixels IRN's PathIndex takes pairs from in training: rows [0, H - r + 1) and columns
    [r - 1, W - r + 1) for radius r, where every displacement's partner lies inside the map."""
    floor = radius - 1
    rows = torch.arange(h, device=device) < h - floor
    cols = (torch.arange(w, device=device) >= floor) & (torch.arange(w, device=device) < w - floor)
    return rows[:, None] & cols[None, :]


def pair_labels(label: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H, W) labels (0 bg, c fg, 255 unknown) -> bg-positive, fg-positive, negative pair masks (B, D, H, W),
    of the sources in :func:`source_window` only, as the reference trains."""
    a = label[:, None]
    b = torch.stack([shift(label, dy, dx, IGNORE) for dy, dx in displacements(radius)], dim=1)
    known = (a != IGNORE) & (b != IGNORE) & source_window(*label.shape[-2:], radius, label.device)
    same = a == b
    return known & same & (a == 0), known & same & (a != 0), known & ~same


def affinity_loss(aff, bg_pos, fg_pos, neg, eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """(bg_pos/2 + fg_pos/2 + neg)/2 with -log(a) for positive and -log(1 - a) for negative pairs."""
    pos = -torch.log(aff + eps)
    ng = -torch.log(1.0 + eps - aff)

    def mean(x, m):
        m = m.float()
        return (x * m).sum() / (m.sum() + eps)

    terms = {"bg_pos": mean(pos, bg_pos), "fg_pos": mean(pos, fg_pos), "neg": mean(ng, neg)}
    terms["total"] = (terms["bg_pos"] / 2 + terms["fg_pos"] / 2 + terms["neg"]) / 2
    return terms
