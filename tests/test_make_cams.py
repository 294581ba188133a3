"""CAM generation: normalisation, flip equivariance, thresholding, and the stage's npz artifacts."""
import contextlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from stages.data.transforms import normalize
from stages.ops.cam import cam_to_label, max_normalize, multiscale_cam, strided_size
from stages.utils.io import load_npz


class Conv(nn.Module):
    """A stand-in classifier: one strided conv, so flips are not symmetric by construction."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 5, stride=4, padding=2)

    def forward(self, x):
        return self.conv(x)


def test_max_normalize_relus_and_scales_each_class_to_one():
    cam = torch.tensor([[[-1.0, 2.0], [4.0, 0.0]], [[0.5, 0.25], [0.0, -3.0]]])
    out = max_normalize(cam)
    assert out.min() == 0
    assert out[0].max().item() == pytest.approx(1.0, abs=1e-5)
    assert out[1].max().item() == pytest.approx(1.0, abs=1e-4)
    assert out[0, 0, 1].item() == pytest.approx(0.5, abs=1e-5)


def test_multiscale_flip_cam_is_flip_equivariant():
    # on sides that are multiples of the stride the reference's crop removes nothing: the geometry is symmetric
    model = Conv().eval()
    img = normalize(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cam, cam_s4 = multiscale_cam(model, img, [1.0, 0.5, 1.5], True, [1, 3], contextlib.nullcontext)
    cam_f, cam_s4_f = multiscale_cam(model, img.flip(-1), [1.0, 0.5, 1.5], True, [1, 3], contextlib.nullcontext)
    assert cam.shape == (2, 48, 64) and cam_s4.shape == (2, *strided_size(48, 64, 4))
    assert torch.allclose(cam_f, cam.flip(-1), atol=1e-5)
    assert torch.allclose(cam_s4_f, cam_s4.flip(-1), atol=1e-5)
    assert cam.flatten(1).max(1).values.tolist() == pytest.approx([1.0, 1.0], abs=1e-4)


class OneCell(nn.Module):
    """A stand-in classifier at the real one's stride (16): one class map, zero but for one cell."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x):
        out = torch.zeros(x.shape[0], 1, -(-x.shape[-2] // 16), -(-x.shape[-1] // 16))
        out[:, 0, self.cell[0], self.cell[1]] = 1.0
        return out


def reference_upsampling(n: int, cell: int) -> np.ndarray:
    """The reference's high-resolution CAM along one axis, computed independently: the strided map of
    ceil(n / 16) cells, bilinearly enlarged 16 times (half-pixel centres: output pixel p samples the map at
    (p + 0.5) / 16 - 0.5, clamped to the first and last cell) to 16 * ceil(n / 16), cropped to n."""
    cells = -(-n // 16)
    src = np.clip((np.arange(16 * cells) + 0.5) / 16 - 0.5, 0, cells - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, cells - 1)
    frac = src - lo
    return ((1 - frac) * (lo == cell) + frac * (hi == cell))[:n]


@pytest.mark.parametrize("height, width", [(375, 500), (500, 333)])
@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_one_cell_cam_lands_where_the_reference_puts_it(height, width, where):
    cells = (-(-height // 16), -(-width // 16))
    cell = tuple(c // 2 for c in cells) if where == "middle" else tuple(c - 1 for c in cells)
    img = torch.zeros(3, height, width)
    cam, _ = multiscale_cam(OneCell(cell), img, [1.0], False, [1], contextlib.nullcontext)
    expected = np.outer(reference_upsampling(height, cell[0]), reference_upsampling(width, cell[1]))
    expected /= expected.max() + 1e-5
    assert cam.shape == (1, height, width)
    np.testing.assert_allclose(cam[0].numpy(), expected, atol=1e-5)
    if where == "middle":  # the peak straddles the cell's centre, 16 * cell + 7.5: a map resized straight to
        # the image's size would put it up to 12 px lower and further right on these sides
        peak = np.argwhere(cam[0].numpy() == cam[0].numpy().max())
        assert {tuple(p) for p in peak} == {(16 * cell[0] + dy, 16 * cell[1] + dx) for dy in (7, 8) for dx in (7, 8)}


def test_cam_to_label_uses_a_constant_background_channel():
    cam = np.array([[[0.9, 0.2, 0.5]], [[0.1, 0.6, 0.45]]], np.float32)  # classes 3 and 7
    assert cam_to_label(cam, [3, 7], 0.3).tolist() == [[3, 7, 3]]
    assert cam_to_label(cam, [3, 7], 0.55).tolist() == [[3, 7, 0]]
    assert cam_to_label(np.zeros((0, 1, 2), np.float32), [], 0.3).tolist() == [[0, 0]]


def test_make_cams_writes_one_npz_per_image(tiny_index, cpu, tmp_path):
    from stages.make_cams import make_cams
    from stages.models.classifier import CAMClassifier
    from stages.utils.io import save_model

    cfg = {"backbone": "resnet18", "pretrained": False, "pretrained_path": None}
    save_model(tmp_path / "model.pt", CAMClassifier("resnet18", tiny_index.num_classes).state_dict(), {"config": cfg})
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))[:3]
    make_cams(tiny_index, ids, tmp_path / "model.pt", {"scales": [1.0, 0.5], "flip": True}, cpu, tmp_path / "cams")
    for image_id in ids:
        d = load_npz(tmp_path / "cams" / f"{image_id}.npz")
        assert d["keys"].tolist() == tiny_index.labels[image_id]
        assert d["cam"].dtype == np.float16 and d["cam"].shape == (len(d["keys"]), 64, 64)
        assert d["cam_s4"].shape == (len(d["keys"]), 16, 16)
        assert 0 <= d["cam"].min() and d["cam"].max() <= 1.0


def test_batched_cams_equal_one_image_at_a_time(tiny_index, cpu, tmp_path):
    from stages.make_cams import make_cams
    from stages.models.classifier import CAMClassifier
    from stages.utils.io import save_model

    cfg = {"backbone": "resnet18", "pretrained": False, "pretrained_path": None}
    save_model(tmp_path / "model.pt", CAMClassifier("resnet18", tiny_index.num_classes).state_dict(), {"config": cfg})
    ids = tiny_index.ids(tiny_index.layout.split_file("train"))[:5]  # a full batch of 3 and a leftover of 2
    cams = {"scales": [1.0, 0.5, 1.5], "flip": True}
    make_cams(tiny_index, ids, tmp_path / "model.pt", cams, cpu, tmp_path / "batched", batch_size=3)
    make_cams(tiny_index, ids, tmp_path / "model.pt", cams, cpu, tmp_path / "single", batch_size=1)
    for image_id in ids:
        a, b = load_npz(tmp_path / "batched" / f"{image_id}.npz"), load_npz(tmp_path / "single" / f"{image_id}.npz")
        assert a["keys"].tolist() == b["keys"].tolist()
        for name in ("cam", "cam_s4"):
            np.testing.assert_allclose(a[name].astype(np.float32), b[name].astype(np.float32), atol=2e-3)


def test_cams_compute_on_the_device_of_the_model(on_meta):
    """On a GPU every tensor of the multi-scale loop must be on it: the meta device stands in for one here."""
    from stages.core.runtime import Runtime
    from stages.make_cams import batched_cams
    from stages.models.classifier import CAMClassifier

    images = [(i, np.zeros((40, 56, 3), np.uint8)) for i in "ab"]
    with on_meta() as device:
        model = CAMClassifier("resnet18", 4).eval().to(device)
        out = list(batched_cams(model, images, {"a": [1, 3], "b": [2]}, {"scales": [1.0, 0.5], "flip": True}, Runtime(device)))
    assert [(i, keys, cam.shape, cam_s4.shape) for i, keys, (cam, cam_s4) in out] == \
        [("a", [1, 3], (2, 40, 56), (2, 10, 14)), ("b", [2], (1, 40, 56), (1, 10, 14))]


def test_a_cam_value_at_the_threshold_is_background_in_float32():
    # the reference pads float32 CAMs with a float32 threshold channel and argmax gives a tie to the background;
    # 0.1 has no exact float32 value, so a float64 threshold channel would lose that tie to a CAM of float32(0.1)
    cam = np.full((1, 1, 2), 0.1, np.float32)
    cam[0, 0, 1] = np.nextafter(np.float32(0.1), np.float32(1))
    assert cam_to_label(cam, [4], 0.1).tolist() == [[0, 4]]
    assert cam_to_label(cam, [4], 0.1).dtype == np.uint8  # class ids, as the palette PNG stores them


def test_the_low_resolution_cam_is_at_the_stride_asked_for():
    # the random walk reads the CAMs at its boundary map's stride: ceil(50 / 8) x ceil(70 / 8) at stride 8
    _, low = multiscale_cam(OneCell((1, 2)), torch.zeros(3, 50, 70), [1.0], False, [1], contextlib.nullcontext, s4_stride=8)
    assert low.shape == (1, 7, 9)


def test_strided_sizes_are_the_ceilings_of_every_size():
    import math

    from stages.ops.cam import strided_up_size

    for stride in (4, 16):
        for h, w in [(n, 41 - n) for n in range(1, 41)]:
            assert strided_size(h, w, stride) == (math.ceil(h / stride), math.ceil(w / stride))
            assert strided_up_size(h, w, stride) == (stride * math.ceil(h / stride), stride * math.ceil(w / stride))


class Cells(nn.Module):
    """A stand-in classifier at stride 16 with three class maps: map c is zero but for cell (1, c)."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3, -(-x.shape[-2] // 16), -(-x.shape[-1] // 16))
        for c in range(3):
            out[:, c, 1, c] = 1.0
        return out


def test_class_k_takes_the_classifiers_map_k_minus_1():
    # class ids count from 1 over the classifier's maps, which count from 0: class 3 is the map with the cell (1, 2)
    img = torch.zeros(3, 40, 56)
    cam, low = multiscale_cam(Cells(), img, [1.0], False, [1, 3], contextlib.nullcontext)
    for i, cell in enumerate([(1, 0), (1, 2)]):
        one, one_low = multiscale_cam(OneCell(cell), img, [1.0], False, [1], contextlib.nullcontext)
        torch.testing.assert_close(cam[i], one[0])
        torch.testing.assert_close(low[i], one_low[0])


def test_a_batch_without_any_class_gets_empty_maps():
    # a mask of background alone gives an image no class; a batch of such images has no map to compute
    from stages.ops.cam import multiscale_cams

    images = torch.zeros(2, 3, 40, 56)
    out = multiscale_cams(Cells(), images, [1.0, 1.5], True, [[], []], contextlib.nullcontext)
    assert [(c.shape, low.shape) for c, low in out] == [((0, 40, 56), (0, 10, 14))] * 2
    mixed = multiscale_cams(Cells(), images, [1.0, 1.5], True, [[], [2]], contextlib.nullcontext)
    assert [(c.shape, low.shape) for c, low in mixed] == [((0, 40, 56), (0, 10, 14)), ((1, 40, 56), (1, 10, 14))]


def plain_cams(model, img, scales, flip, classes):
    """The reference's multi-scale CAM of one normalised image, written out one scale, flip and class at a time: each
    ReLU'd map, flipped back, resized to the image's size rounded up to 16 and cropped, and resized to stride 4; the
    sums, max-normalised."""
    import math

    import torch.nn.functional as F

    from stages.data.transforms import resize_normalized

    _, h, w = img.shape
    up, s4 = (16 * math.ceil(h / 16), 16 * math.ceil(w / 16)), (math.ceil(h / 4), math.ceil(w / 4))
    full, low = torch.zeros(len(classes), *up), torch.zeros(len(classes), *s4)
    for s in scales:
        x = resize_normalized(img[None], (round(h * s), round(w * s)))
        for flipped in ([False, True] if flip else [False]):
            a = F.relu(model(x.flip(-1) if flipped else x)[0])
            a = a.flip(-1) if flipped else a
            for i, k in enumerate(classes):
                full[i] += F.interpolate(a[None, k - 1 : k], size=up, mode="bilinear", align_corners=False)[0, 0]
                low[i] += F.interpolate(a[None, k - 1 : k], size=s4, mode="bilinear", align_corners=False)[0, 0]
    full = full[:, :h, :w]
    return [m / (m.flatten(1).max(1).values[:, None, None] + 1e-5) for m in (full, low)]


def test_multiscale_flip_cams_are_the_sum_over_each_scale_and_flip():
    model = Conv().eval()
    img = normalize(np.random.default_rng(1).integers(0, 256, (45, 61, 3), dtype=np.uint8))
    with torch.no_grad():
        expected = plain_cams(model, img, [1.0, 0.5, 1.5], True, [1, 3])
    got = multiscale_cam(model, img, [1.0, 0.5, 1.5], True, [1, 3], contextlib.nullcontext)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


class PerPixel(nn.Module):
    """A stand-in classifier at stride 1: its two class maps are the input's first two channels."""

    def forward(self, x):
        return x[:, :2]


def test_a_scale_that_leaves_one_row_or_column_runs_on_one():
    # 2 rows (or columns) at scale 0.5 are one, not two: the one-pixel maps are what the sums are made of
    rng = np.random.default_rng(2)
    for shape in ((2, 40, 3), (40, 2, 3)):
        img = normalize(rng.integers(0, 256, shape, dtype=np.uint8))
        expected = plain_cams(PerPixel(), img, [0.5, 1.0], False, [1, 2])
        got = multiscale_cam(PerPixel(), img, [0.5, 1.0], False, [1, 2], contextlib.nullcontext)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)
