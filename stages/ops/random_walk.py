"""Random walk on a local affinity graph, in banded form.

IRN builds the dense HW x HW transition matrix T (column-normalised A^beta) and
squares it ``exp_times`` times. Here T is stored as its (2r+1)^2 diagonals-in-space,
W[d, j] = T[j + d, j], and the walk x <- x T is applied 2^exp_times times as a local
weighted sum: the same result without the O((HW)^2) matrix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.ops.affinity import displacements, path_affinity, shift


def transition_weights(boundary: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """(H, W) boundary probabilities -> W ((2r+1)^2, H*W), columns of T in unfold order."""
    h, w = boundary.shape
    k = 2 * radius + 1
    half = path_affinity(boundary[None], radius)[0]  # (D, H, W): affinity of j and j + d
    aff = torch.zeros(k * k, h, w, dtype=boundary.dtype, device=boundary.device)
    aff[radius * k + radius] = 1.0  # a pixel and itself
    for i, (dy, dx) in enumerate(displacements(radius)):
        aff[(dy + radius) * k + (dx + radius)] = half[i]
        # affinity of j and j - d is the affinity of (j - d) and j
        aff[(-dy + radius) * k + (-dx + radius)] = shift(half[i], -dy, -dx, 0.0)
    aff = aff.pow(beta)
    return (aff / aff.sum(0, keepdim=True)).reshape(k * k, h * w)


def propagate(x: torch.Tensor, weights: torch.Tensor, radius: int, steps: int) -> torch.Tensor:
    """Apply x <- x T ``steps`` times; x is (K, H, W)."""
    kch, h, w = x.shape
    k = 2 * radius + 1
    for _ in range(steps):
        cols = F.unfold(x[:, None], kernel_size=k, padding=radius)  # (K, k*k, H*W): x[j + d]
        x = (cols * weights[None]).sum(1).reshape(kch, h, w)
    return x


def random_walk(seeds: torch.Tensor, boundary: torch.Tensor, radius: int, beta: float, exp_times: int) -> torch.Tensor:
    """Propagate class seeds (K, H, W) over the boundary map (H, W): x (1 - b) T^(2^exp_times)."""
    weights = transition_weights(boundary, radius, beta)
    return propagate(seeds * (1.0 - boundary), weights, radius, 2**exp_times)

