"""The affinity ops shared by affinity_labels, train_affinity and random_walk, on hand-computed values."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from stages.ops.affinity import affinity_loss, downsample_labels


def test_affinity_loss_with_its_default_eps():
    # two pairs: a bg-positive one of affinity 0.5 and a negative one of 0.25; no fg-positive pair, whose mean is
    # 0 / (0 + eps); eps = 1e-5 inside each log and under each count (a count is float32: rel 1e-6, where a sign
    # changed under the count moves it by 2e-5)
    eps = 1e-5
    aff = torch.tensor([0.5, 0.25], dtype=torch.float64)
    bg, fg, neg = torch.tensor([True, False]), torch.tensor([False, False]), torch.tensor([False, True])
    terms = affinity_loss(aff, bg, fg, neg)
    bg_pos, neg_term = -math.log(0.5 + eps) / (1 + eps), -math.log(1 + eps - 0.25) / (1 + eps)
    assert terms["bg_pos"].item() == pytest.approx(bg_pos, rel=1e-6) and terms["fg_pos"].item() == 0.0
    assert terms["neg"].item() == pytest.approx(neg_term, rel=1e-6)
    assert terms["total"].item() == pytest.approx((bg_pos / 2 + neg_term) / 2, rel=1e-6)


@pytest.mark.parametrize("big, small", [((3, 5), (2, 3)), ((7, 9), (3, 4)), ((13, 6), (4, 5)), ((64, 48), (16, 12))])
def test_downsampled_labels_are_pils_nearest_resize(big, small):
    # PIL's nearest takes the pixel under each output cell's centre: at these ratios the last cell takes the last
    # row or column, which a tighter bound on the index would move
    label = np.random.default_rng(0).integers(0, 255, big, dtype=np.uint8)
    expected = np.asarray(Image.fromarray(label).resize(small[::-1], Image.NEAREST))
    got = downsample_labels(torch.from_numpy(label)[None], small)[0].numpy()
    np.testing.assert_array_equal(got, expected)


def test_path_cells_of_a_displacement_in_any_direction():
    # the cells of the bounding box of (0, 0) and d within distance 1 of the line through them, whichever way d
    # points (the walk's displacements point down or right; the definition does not depend on it)
    from stages.ops.affinity import path

    for d in [(-2, 3), (-3, -1), (2, -3), (0, -2), (-4, 0)]:
        norm = math.hypot(*d)
        box = [(y, x) for y in range(min(0, d[0]), max(0, d[0]) + 1) for x in range(min(0, d[1]), max(0, d[1]) + 1)]
        assert set(path(d)) == {(y, x) for y, x in box if abs(d[0] * x - d[1] * y) / norm < 1}, d
