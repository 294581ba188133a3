"""Random walk on a local affinity graph, in banded form.

IRN builds the dense HW x HW transition matrix T (column-normalised A^beta) and
squares it ``exp_times`` times. Here T is stored as its (2r+1)^2 diagonals-in-space,
W[d, j] = T[j + d, j], held as a sparse matrix with (2r+1)^2 entries per column, and the
walk x <- x T is applied 2^exp_times times as sparse matrix products: the same result
without the O((HW)^2) matrix.
"""
from __future__ import annotations

import warnings

import torch

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


def transition_matrix(weights: torch.Tensor, radius: int, h: int, w: int) -> torch.Tensor:
    """T transposed as a sparse CSR (HW, HW) matrix: row j holds W[d, j] at column j + d (in-map d only).

    Built row by row in place of a COO sort, with int32 indices: a few bytes per entry at most."""
    k = 2 * radius + 1
    ints = {"dtype": torch.int32, "device": weights.device}
    d = torch.arange(k * k, **ints)
    iy = torch.arange(h, **ints).repeat_interleave(w)[:, None] + (d // k - radius)[None]  # (HW, k*k)
    ix = torch.arange(w, **ints).repeat(h)[:, None] + (d % k - radius)[None]
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    crow = torch.zeros(h * w + 1, **ints)
    crow[1:] = inside.sum(1).cumsum(0)
    # d runs row-major over the window, so each row's columns j + d come out ascending
    with warnings.catch_warnings():  # CSR products are all this uses of torch's "beta" sparse support, and tested
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, (iy * w + ix)[inside], weights.T[inside], (h * w, h * w),
                                       check_invariants=False)


def propagate(x: torch.Tensor, weights: torch.Tensor, radius: int, steps: int) -> torch.Tensor:
    """Apply x <- x T ``steps`` times; x is (K, H, W). One sparse matrix product per step, all K maps at once."""
    kch, h, w = x.shape
    t = transition_matrix(weights, radius, h, w)
    y = x.reshape(kch, h * w).T.contiguous()
    for _ in range(steps):
        y = t @ y
    return y.T.reshape(kch, h, w)


def random_walk(seeds: torch.Tensor, boundary: torch.Tensor, radius: int, beta: float, exp_times: int) -> torch.Tensor:
    """Propagate class seeds (K, H, W) over the boundary map (H, W): x (1 - b) T^(2^exp_times)."""
    weights = transition_weights(boundary, radius, beta)
    return propagate(seeds * (1.0 - boundary), weights, radius, 2**exp_times)

