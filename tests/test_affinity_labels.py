"""Affinity labels from confident CAM regions, and the dense CRF under them."""
import numpy as np

from stages.affinity_labels import affinity_label
from stages.ops.crf import crf_labels, crf_probs

CRF = {"iterations": 5, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 20, "srgb": 5, "compat": 10}}


def square_image():
    img = np.full((32, 32, 3), 60, np.uint8)
    img[8:24, 8:24] = (220, 40, 40)
    return img


def test_crf_keeps_shape_and_label_set_and_snaps_to_edges():
    img = square_image()
    labels = np.zeros((32, 32), np.int64)
    labels[10:26, 10:26] = 1  # misaligned by two pixels
    out = crf_labels(img, labels, 2, CRF)
    assert out.shape == labels.shape and set(np.unique(out)) <= {0, 1}
    truth = np.zeros((32, 32), bool)
    truth[8:24, 8:24] = True
    assert np.mean((out == 1) == truth) > np.mean((labels == 1) == truth)


def test_crf_probs_returns_distributions():
    img = square_image()
    p = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    p /= p.sum(0, keepdims=True)
    q = crf_probs(img, p, CRF)
    assert q.shape == p.shape and np.allclose(q.sum(0), 1, atol=1e-3)


def test_affinity_label_is_fg_confident_bg_confident_else_ignored():
    img = square_image()
    cam = np.zeros((1, 32, 32), np.float32)
    cam[0, 8:24, 8:24] = 0.2  # between the thresholds: unknown
    cam[0, 12:20, 12:20] = 0.9  # confident foreground
    no_crf = {**CRF, "iterations": 0}  # the CRF's own effect is tested above
    label = affinity_label(img, cam, [5], {"fg_threshold": 0.4, "bg_threshold": 0.1, "crf": no_crf})
    assert (label == 5).sum() == 64 and (label == 255).sum() == 256 - 64
    assert set(np.unique(label)) <= {0, 5, 255}
    assert label[16, 16] == 5
    assert label[2, 2] == 0
    assert (label == 255).any()


def test_affinity_label_without_classes_is_background():
    label = affinity_label(square_image(), np.zeros((0, 32, 32), np.float32), [], {"fg_threshold": 0.4, "bg_threshold": 0.1, "crf": CRF})
    assert (label == 0).all()


def test_crf_unary_clips_probabilities_at_1e_5_as_the_reference(monkeypatch):
    # the reference calls pydensecrf's unary_from_softmax with its default clip: -log max(p, 1e-5)
    import stages.ops.crf as crf

    seen = {}
    monkeypatch.setattr(crf, "_crf", lambda img, unary, n, cfg: seen.setdefault("unary", unary))
    p = np.array([1e-9, 1e-6, 1e-5, 0.3, 0.7 - 1e-5 - 1e-6 - 1e-9], np.float32).reshape(5, 1, 1)
    crf_probs(square_image()[:1, :1], p, CRF)
    expected = -np.log(np.array([1e-5, 1e-5, 1e-5, 0.3, p[4, 0, 0]], np.float32))
    np.testing.assert_allclose(seen["unary"].ravel(), expected, rtol=1e-6)


def test_crf_takes_an_image_of_any_numeric_type_as_its_uint8_values():
    # pydensecrf's bilateral term reads 8-bit RGB only: a float image of the same values gives the same result
    img = square_image()
    labels = np.zeros((32, 32), np.int64)
    labels[10:26, 10:26] = 1
    np.testing.assert_array_equal(crf_labels(img.astype(np.float64), labels, 2, CRF), crf_labels(img, labels, 2, CRF))
    p = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    p /= p.sum(0, keepdims=True)
    np.testing.assert_array_equal(crf_probs(img.astype(np.float32), p, CRF), crf_probs(img, p, CRF))
