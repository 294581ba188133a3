"""Pixel-pair affinities, their labels and loss, and AffinityNet training."""
import math

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import CLASSES, TINY

from stages.data.transforms import normalize
from stages.data.voc import read_mask
from stages.ops.affinity import affinity_loss, displacements, pair_labels, path, path_affinity
from stages.utils.io import save_label_png


def test_displacements_cover_each_pair_once():
    d = set(displacements(4))
    assert all((-dy, -dx) not in d for dy, dx in d)
    full = {(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4) if 0 < dy * dy + dx * dx < 16}
    assert d | {(-dy, -dx) for dy, dx in d} == full


@pytest.mark.parametrize("radius", [5, 10])
def test_path_is_every_cell_within_one_of_the_segment_as_irn(segment_cells, radius):
    # IRN's PathIndex: the cells whose distance to the segment from 0 to d is below 1; here computed exactly
    # by projecting each cell of a window around the segment onto it
    for d in displacements(radius):
        assert set(path(d)) == segment_cells(d), d
        assert len(path(d)) == len(set(path(d)))


def test_path_cells_by_hand():
    assert path((0, 3)) == ((0, 0), (0, 1), (0, 2), (0, 3))
    assert set(path((1, 1))) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # both cells beside the diagonal
    assert set(path((1, -2))) == {(0, -2), (0, -1), (0, 0), (1, -2), (1, -1), (1, 0)}
    # |2x - 3y| < sqrt(13): (0, 2) and (2, 1) are 4/sqrt(13) > 1 away from the line
    assert set(path((2, 3))) == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3)}
    # IRN's thick path: 242 cells over the 34 pairs at radius 5, about 7 per pair (a rounded line has about 4)
    assert (len(displacements(5)), sum(len(path(d)) for d in displacements(5))) == (34, 242)


def test_a_one_pixel_diagonal_boundary_cuts_every_path_across_it():
    n = 12
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    b = (ys + xs == n - 1).double()[None]
    aff = path_affinity(b, radius=5)
    crossings = 0
    for i, (dy, dx) in enumerate(displacements(5)):
        inside = (ys + dy < n) & (xs + dx >= 0) & (xs + dx < n)
        across = inside & (ys + xs < n - 1) & (ys + dy + xs + dx > n - 1)
        crossings += int(across.sum())
        if across.any():
            assert aff[0, i][across].max().item() == 0.0, (dy, dx)
    assert crossings > 500
    # a rounded thin line from (4, 6) to (5, 7) would pass between the wall cells (4, 7) and (5, 6)
    assert aff[0, displacements(5).index((1, 1)), 4, 6].item() == 0.0


def brute_force_pairs(label, radius):
    """IRN's training pairs (PathIndex): sources cropped to rows [0, h - rf) and columns [rf, w - rf) with
    rf = ceil(radius) - 1, each with its partner at every displacement; pairs with an unknown pixel are left out."""
    h, w = label.shape
    rf = math.ceil(radius) - 1
    counts = {"bg": 0, "fg": 0, "neg": 0}
    for dy, dx in displacements(radius):
        for y in range(h - rf):
            for x in range(rf, w - rf):
                y2, x2 = y + dy, x + dx
                assert 0 <= y2 < h and 0 <= x2 < w  # the crop keeps every partner inside
                a, b = label[y, x], label[y2, x2]
                if a == 255 or b == 255:
                    continue
                counts["bg" if a == b == 0 else "fg" if a == b else "neg"] += 1
    return counts


def test_pair_labels_match_a_brute_force_count():
    rng = np.random.default_rng(0)
    label = rng.choice([0, 1, 2, 255], size=(6, 7), p=[0.4, 0.25, 0.2, 0.15]).astype(np.int64)
    bg, fg, neg = pair_labels(torch.from_numpy(label)[None], radius=3)
    expected = brute_force_pairs(label, 3)
    assert (int(bg.sum()), int(fg.sum()), int(neg.sum())) == (expected["bg"], expected["fg"], expected["neg"])


def test_affinity_loss_known_value():
    aff = torch.tensor([0.5, 0.8, 0.1])
    bg = torch.tensor([True, False, False])
    fg = torch.tensor([False, True, False])
    neg = torch.tensor([False, False, True])
    terms = affinity_loss(aff, bg, fg, neg, eps=0.0)
    expected = (-math.log(0.5) / 2 - math.log(0.8) / 2 - math.log(0.9)) / 2
    assert terms["total"].item() == pytest.approx(expected, rel=1e-5)


def test_train_affinity_writes_its_model_on_the_classifiers_frozen_backbone(tiny_index, cpu, tmp_path):
    """The whole chain from a classifier's CAMs: the sidecar, the history, no checkpoint left, the backbone the
    classifier's (what it learns: test_affinity_net_learns_to_separate_held_out_pairs_across_a_boundary)."""
    from conftest import index_file, train_cfg, training_job

    from stages.affinity_labels import affinity_labels
    from stages.make_cams import make_cams
    from stages.models.classifier import CAMClassifier
    from stages.train_affinity import run
    from stages.utils.io import load_model, save_model

    ids = tiny_index.ids(tiny_index.layout.split_file("train"))
    cls_cfg = {"backbone": "resnet18", "pretrained": False}
    save_model(tmp_path / "cls.pt", CAMClassifier("resnet18", 4).state_dict(), {"config": cls_cfg, "backbone": "resnet18"})
    make_cams(tiny_index, ids, tmp_path / "cls.pt", {"scales": [1.0], "flip": False}, cpu, tmp_path / "cams")
    crf = {"iterations": 1, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 50, "srgb": 5, "compat": 10}}
    affinity_labels(tiny_index, ids, tmp_path / "cams", {"fg_threshold": 0.4, "bg_threshold": 0.1, "crf": crf},
                    tmp_path / "aff_labels", processes=2)
    cfg = train_cfg("affinity", backbone_init="classifier", head_channels=8, radius=4, epochs=1)
    run(training_job("train_affinity", index_file(tiny_index, tmp_path), tiny_index.layout.split_file("train"),
                     tmp_path / "aff", cfg, tmp_path / "ckpt.pt", wildcards={"seed": 0},
                     affinity_labels=tmp_path / "aff_labels", classifier=tmp_path / "cls.pt"))
    state, meta = load_model(tmp_path / "aff" / "model.pt")
    assert meta["backbone"] == "resnet18" and "boundary.weight" in state
    assert meta["pretrained"] == f"classifier:{tmp_path / 'cls.pt'}"
    assert (tmp_path / "aff" / "history.csv").read_text().startswith("epoch,lr,")
    assert not (tmp_path / "ckpt.pt").exists()
    # the frozen backbone is the classifier's, untouched by training
    cls_state, _ = load_model(tmp_path / "cls.pt")
    assert torch.equal(state["backbone.conv1.weight"], cls_state["backbone.conv1.weight"])


# Objects in their class's colour, large, without clutter: their boundaries are learnable in a few steps
EASY = {**TINY, "p_class_colour": 1.0, "max_clutter": 0, "object_scale": [0.3, 0.45]}
EVAL_RADIUS = 5
EPOCHS, LR = 16, 0.3  # 32 steps; the pair AUC hardly moves with twice as many, lr 1 diverges


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """The probability that a random positive scores above a random negative (ties count half): Mann-Whitney's U
    over the product of the counts."""
    ranks = scipy.stats.rankdata(np.concatenate([positive, negative]))  # ties share their mean rank
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return u / (len(positive) * len(negative))


def test_auc_by_hand():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0]), np.array([2.0])) == 0.0
    assert auc(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 0.5
    assert auc(np.array([2.0]), np.array([2.0, 1.0])) == 0.75


def pair_auc(model, index, ids) -> float:
    """How well the affinities of ``model``'s boundary maps separate the pixel pairs of one object or the
    background (positives) from the pairs across two regions (negatives), on the masks of ``ids`` taken at the
    centre pixel of each 4x4 block of the stride-4 map; pairs up to EVAL_RADIUS apart, a pair with the VOC outline
    (255) left out."""
    positive, negative = [], []
    for image_id in ids:
        with torch.no_grad():
            boundary = model.boundary_prob(normalize(index.read_image(image_id))[None])
        aff = path_affinity(boundary, EVAL_RADIUS)[0].numpy()
        mask = read_mask(index.layout.mask_path(image_id))[2::4, 2::4].astype(np.int64)
        h, w = mask.shape
        for k, (dy, dx) in enumerate(displacements(EVAL_RADIUS)):
            for y in range(h - dy):
                for x in range(max(0, -dx), min(w, w - dx)):
                    a, b = mask[y, x], mask[y + dy, x + dx]
                    if a != 255 and b != 255:
                        (positive if a == b else negative).append(aff[k, y, x])
    assert len(positive) > 1000 and len(negative) > 100
    return auc(np.array(positive), np.array(negative))


def test_affinity_net_learns_to_separate_held_out_pairs_across_a_boundary(tmp_path):
    """AffinityNet trained on the pair labels of EASY's training images (their masks as the confident regions, the
    VOC outline unknown) separates the pairs of the held-out val images far better than before training: pair AUC
    about 0.57 before, 0.78 after, in fp32 as in bf16. Fails if the loss pulls negative pairs together as it does
    positive ones (AUC 0.49 after), or if the pair labels ignore the masks (0.39)."""
    from conftest import index_file, layout_of, train_cfg, training_job

    from stages.core.runtime import seed_everything
    from stages.image_labels import build_index
    from stages.make_dataset import make_dataset
    from stages.models.classifier import CAMClassifier
    from stages.models.factory import build_affinity_net
    from stages.train_affinity import run
    from stages.utils.io import load_model, save_model

    make_dataset(tmp_path / "VOC2012", CLASSES, EASY, seed=0)
    index, _ = build_index(layout_of(tmp_path / "VOC2012"))
    for image_id in index.ids(index.layout.split_file("train")):
        save_label_png(tmp_path / "aff_labels" / f"{image_id}.png", read_mask(index.layout.mask_path(image_id)))
    torch.manual_seed(0)  # the frozen backbone: a random classifier's
    save_model(tmp_path / "cls.pt", CAMClassifier("resnet18", 4).state_dict(), {"config": {}, "backbone": "resnet18"})
    cfg = train_cfg("affinity", backbone_init="classifier", head_channels=32, radius=EVAL_RADIUS, epochs=EPOCHS, lr=LR)
    run(training_job("train_affinity", index_file(index, tmp_path), index.layout.split_file("train"), tmp_path / "aff",
                     cfg, tmp_path / "ckpt.pt", wildcards={"seed": 0}, affinity_labels=tmp_path / "aff_labels",
                     classifier=tmp_path / "cls.pt"))
    state, meta = load_model(tmp_path / "aff" / "model.pt")
    trained = build_affinity_net(meta["config"], "resnet18").eval()
    trained.load_state_dict(state)
    seed_everything(0)  # the trainer's start: the runtime seeds, then the heads are drawn
    untrained = build_affinity_net(meta["config"], "resnet18").eval()
    untrained.backbone.load_state_dict(trained.backbone.state_dict())  # the same frozen backbone
    held_out = index.ids(index.layout.split_file("val"))
    before, after = pair_auc(untrained, index, held_out), pair_auc(trained, index, held_out)
    assert after > 0.7 and after > before + 0.12, (before, after)


def test_the_affinity_ops_and_step_compute_on_the_device_of_their_inputs(on_meta):
    """On a GPU every tensor of the pair labels, affinities and loss must be on it: the meta device stands in for one."""
    from stages.models.affinity import AffinityNet
    from stages.ops.affinity import downsample_labels
    from stages.train_affinity import affinity_step

    with on_meta() as device:
        label = torch.randint(0, 3, (2, 32, 32), device=device)
        small = downsample_labels(label, (8, 8))
        terms = affinity_loss(path_affinity(torch.rand(2, 8, 8, device=device), 5), *pair_labels(small, 5))
        assert small.device == terms["total"].device == device
        model = AffinityNet("resnet18").train().to(device)
        terms = affinity_step(model, 5)({"image": torch.randn(2, 3, 32, 32, device=device), "mask": label}, 0, 10)
        terms["total"].backward()
        assert terms["total"].device == device
