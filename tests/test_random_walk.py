"""The banded random walk: a column-stochastic transition, equal to the dense matrix power."""

import numpy as np
import torch

from stages.ops.random_walk import propagate, random_walk, transition_weights


def dense_transition(weights, radius, h, w):
    """The dense (HW, HW) matrix T with T[j + d, j] = weights[d, j]."""
    k = 2 * radius + 1
    t = torch.zeros(h * w, h * w, dtype=weights.dtype)
    for j in range(h * w):
        jy, jx = divmod(j, w)
        for idx in range(k * k):
            iy, ix = jy + idx // k - radius, jx + idx % k - radius
            if 0 <= iy < h and 0 <= ix < w:
                t[iy * w + ix, j] += weights[idx, j]
    return t


def boundary_map(h=9, w=11):
    torch.manual_seed(0)
    b = torch.rand(h, w) * 0.2
    b[:, 5] = 0.95  # a wall
    return b.double()


def test_transition_columns_sum_to_one():
    b = boundary_map()
    weights = transition_weights(b, radius=3, beta=10)
    t = dense_transition(weights, 3, *b.shape)
    assert torch.allclose(t.sum(0), torch.ones(b.numel(), dtype=t.dtype))
    assert (weights >= 0).all()
    assert weights.sum(0).allclose(torch.ones(b.numel(), dtype=t.dtype))


def test_transition_is_symmetric_before_normalisation():
    b = boundary_map()
    radius, beta = 3, 1.0
    weights = transition_weights(b, radius, beta)
    t = dense_transition(weights, radius, *b.shape)
    # T = A / colsum(A) with A symmetric: T * colsum must be symmetric
    colsum = 1.0 / t.diagonal()  # A[j, j] = 1, so T[j, j] = 1 / colsum(j)
    affinity = t * colsum[None, :]
    assert torch.allclose(affinity, affinity.T, atol=1e-9)


def test_banded_walk_equals_dense_matrix_power():
    b = boundary_map()
    h, w = b.shape
    radius, beta, exp_times = 3, 10, 3
    seeds = torch.rand(2, h, w, dtype=torch.float64)
    weights = transition_weights(b, radius, beta)
    t = dense_transition(weights, radius, h, w)
    for _ in range(exp_times):
        t = t @ t
    expected = ((seeds * (1 - b)).reshape(2, -1) @ t).reshape(2, h, w)
    assert torch.allclose(random_walk(seeds, b, radius, beta, exp_times), expected, atol=1e-10)


def test_walk_preserves_constants_and_never_exceeds_the_seed_maximum():
    b = boundary_map()
    weights = transition_weights(b, 3, 10)
    ones = torch.ones(1, *b.shape, dtype=torch.float64)
    assert torch.allclose(propagate(ones, weights, 3, 16), ones)
    seeds = torch.rand(3, *b.shape, dtype=torch.float64)
    out = propagate(seeds, weights, 3, 16)
    assert (out.flatten(1).max(1).values <= seeds.flatten(1).max(1).values + 1e-12).all()


def test_a_wall_holds_the_walk_back():
    h, w = 12, 12
    b = torch.zeros(h, w, dtype=torch.float64)
    b[:, 6] = 1.0
    seeds = torch.zeros(1, h, w, dtype=torch.float64)
    seeds[0, :, :3] = 1.0
    out = random_walk(seeds, b, radius=3, beta=10, exp_times=5)[0]
    assert out[:, 7:].max() < 1e-6
    assert out[:, :6].mean() > 0.3


def thin_line_cells(d: tuple[int, int]) -> set[tuple[int, int]]:
    """A rounded one-cell line from 0 to d: what a one-pixel diagonal wall lets through."""
    n = max(abs(d[0]), abs(d[1]))
    return {(round(k * d[0] / n), round(k * d[1] / n)) for k in range(n + 1)}


def dense_reference_walk(seeds, boundary, radius, beta, exp_times, cells):
    """IRN's propagate_to_edge written out densely: A[i, j] = 1 - max boundary on the path, A[i, i] = 1,
    T = A^beta / colsum, (seeds (1 - b)) T^(2^exp_times)."""
    h, w = boundary.shape
    a = torch.eye(h * w, dtype=torch.float64)
    window = [(dy, dx) for dy in range(-radius + 1, radius) for dx in range(-radius + 1, radius)
              if 0 < dy * dy + dx * dx < radius * radius]
    for dy, dx in window:
        offsets = cells((dy, dx))
        for y in range(h):
            for x in range(w):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    a[y * w + x, (y + dy) * w + x + dx] = 1 - max(boundary[y + oy, x + ox].item() for oy, ox in offsets)
    t = a.pow(beta)
    t = t / t.sum(0, keepdim=True)
    for _ in range(exp_times):
        t = t @ t
    return ((seeds * (1 - boundary)).reshape(len(seeds), -1) @ t).reshape(seeds.shape)


def test_a_one_pixel_diagonal_wall_holds_the_walk_as_irn(segment_cells):
    n, radius, beta, exp_times = 14, 5, 10, 8
    torch.manual_seed(1)
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    b = torch.rand(n, n, dtype=torch.float64) * 0.2
    b[ys + xs == n - 1] = 1.0
    seeds = torch.rand(2, n, n, dtype=torch.float64) * (ys + xs < n - 1)
    out = random_walk(seeds, b, radius, beta, exp_times)
    expected = dense_reference_walk(seeds, b, radius, beta, exp_times, cells=segment_cells)
    assert ((out - expected).abs().amax((1, 2)) / expected.amax((1, 2))).max() < 1e-4
    far = ys + xs > n - 1
    assert out[:, far].max() == 0.0 and out[:, ys + xs < n - 1].min() > 0.01 * out.max()
    # the thin rounded path of a plain line would let the walk through the wall
    leaked = dense_reference_walk(seeds, b, radius, beta, exp_times, cells=thin_line_cells)
    assert leaked[:, far].max() > 0.05 * leaked.max()


def test_the_walk_and_the_stage_compute_on_the_device_of_their_inputs(on_meta):
    """On a GPU every tensor of the walk must be on it: the meta device stands in for one here."""
    from stages.core.runtime import Runtime
    from stages.models.affinity import AffinityNet
    from stages.random_walk import propagate_cams

    with on_meta() as device:
        rw = random_walk(torch.rand(3, 10, 14, device=device), torch.rand(10, 14, device=device), 5, 10, 2)
        assert rw.device == device and rw.shape == (3, 10, 14)
        model = AffinityNet("resnet18").eval().to(device)
        img, cam_s4 = np.zeros((40, 56, 3), np.uint8), np.ones((2, 10, 14), np.float16)
        assert propagate_cams(model, img, cam_s4, {"radius": 5, "beta": 10, "exp_times": 2}, Runtime(device)).shape == (2, 40, 56)


def test_the_sparse_operator_holds_the_in_map_entries_of_any_weights():
    # weights of displacements leaving the map are zero in a walk, so a stray entry would pass unseen there: with
    # arbitrary nonzero weights every entry must be T's transpose, and each column index inside the map
    from stages.ops.random_walk import transition_matrix

    radius, h, w = 1, 3, 4
    weights = torch.arange(1.0, 1.0 + 9 * h * w, dtype=torch.float64).reshape(9, h * w)
    t = transition_matrix(weights, radius, h, w)
    assert t._nnz() == 4 * 4 + 6 * (2 * (w - 2) + 2 * (h - 2)) + 9 * (h - 2) * (w - 2)  # corners, edges, inside
    assert 0 <= int(t.col_indices().min()) and int(t.col_indices().max()) < h * w
    assert torch.equal(t.to_dense(), dense_transition(weights, radius, h, w).T)
