"""The Puzzle module: tiling, merging, the three losses and the alpha schedule."""
import math

import pytest
import torch

from stages.ops.puzzle import VARIANTS, alpha_at, classification_loss, merge, puzzle_losses, reconstruction_loss, tile


def test_merge_is_the_exact_inverse_of_tile():
    x = torch.randn(3, 5, 8, 12)
    t = tile(x)
    assert t.shape == (12, 5, 4, 6)
    assert torch.equal(merge(t), x)


def test_tiles_are_row_major_quadrants_grouped_by_tile():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    t = tile(torch.cat([x, x + 100]))
    # tile k of image b sits at index k * B + b
    assert t[0, 0].tolist() == [[0, 1], [4, 5]]
    assert t[1, 0].tolist() == [[100, 101], [104, 105]]
    assert t[2, 0].tolist() == [[2, 3], [6, 7]]
    assert t[4, 0].tolist() == [[8, 9], [12, 13]]
    assert t[6, 0].tolist() == [[10, 11], [14, 15]]


def test_tile_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        tile(torch.zeros(1, 1, 5, 4))


def test_classification_loss_matches_the_formula():
    cam = torch.zeros(1, 2, 2, 2)
    cam[0, 0] = 2.0  # GAP = 2 for class 1, 0 for class 2
    y = torch.tensor([[1.0, 0.0]])
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2
    assert classification_loss(cam, y).item() == pytest.approx(expected, rel=1e-6)


def test_reconstruction_loss_counts_only_present_classes():
    cam = torch.zeros(1, 2, 2, 2)
    cam_re = torch.zeros(1, 2, 2, 2)
    cam_re[0, 0] = 1.0  # class 1 differs by 1 everywhere
    cam_re[0, 1] = 5.0  # class 2 differs by 5 but is absent
    y = torch.tensor([[1.0, 0.0]])
    # mean over all 8 elements of |diff| * y = 4 * 1 / 8
    assert reconstruction_loss(cam, cam_re, y).item() == pytest.approx(0.5)


def test_alpha_ramps_linearly_over_half_of_training_then_stays():
    assert alpha_at(0, 100, 4.0, 0.5) == 0.0
    assert alpha_at(25, 100, 4.0, 0.5) == pytest.approx(2.0)
    assert alpha_at(50, 100, 4.0, 0.5) == pytest.approx(4.0)
    assert alpha_at(90, 100, 4.0, 0.5) == pytest.approx(4.0)


def test_puzzle_total_is_cls_plus_pcls_plus_alpha_re():
    torch.manual_seed(0)
    cam, cam_re = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    y = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    terms = puzzle_losses(cam, cam_re, y, VARIANTS["puzzle"], alpha=3.0)
    expected = classification_loss(cam, y) + classification_loss(cam_re, y) + 3.0 * reconstruction_loss(cam, cam_re, y)
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name,keys", [
    ("baseline", {"cls", "total"}),
    ("pcls", {"cls", "p_cls", "total"}),
    ("re", {"cls", "re", "total"}),
    ("puzzle", {"cls", "p_cls", "re", "total"}),
])
def test_variants_switch_the_losses(name, keys):
    cam = torch.randn(1, 2, 4, 4)
    y = torch.tensor([[1.0, 0.0]])
    cam_re = cam.clone() if VARIANTS[name].puzzle else None
    assert set(puzzle_losses(cam, cam_re, y, VARIANTS[name], 1.0)) == keys


def test_the_losses_and_step_compute_on_the_device_of_their_inputs(on_meta):
    """On a GPU every tensor of the puzzle step must be on it: the meta device stands in for one here."""
    from stages.models.classifier import CAMClassifier
    from stages.train_classifier import puzzle_step

    with on_meta() as device:
        cam, y = torch.randn(2, 4, 8, 8, device=device), torch.ones(2, 4, device=device)
        terms = puzzle_losses(cam, merge(tile(cam)), y, VARIANTS["puzzle"], 0.5)
        assert terms["total"].device == device
        model = CAMClassifier("resnet18", 4).train().to(device)
        terms = puzzle_step(model, VARIANTS["puzzle"], 4.0, 0.5)({"image": torch.randn(2, 3, 32, 32, device=device), "label": y}, 1, 10)
        terms["total"].backward()
        assert terms["total"].device == device


def test_reconstruction_loss_is_the_absolute_difference_of_two_nonzero_maps():
    # |2 - 3| = 1 for the present class; a sum (5) or a signed difference (-1) would show
    cam, cam_re = torch.full((1, 2, 2, 2), 2.0), torch.full((1, 2, 2, 2), 3.0)
    assert reconstruction_loss(cam, cam_re, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)
