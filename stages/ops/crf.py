"""Dense CRF (pydensecrf2) refinement of label maps and of class probabilities."""
from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax


def _crf(img: np.ndarray, unary: np.ndarray, n_labels: int, cfg: dict) -> np.ndarray:
    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    g, b = cfg["gaussian"], cfg["bilateral"]
    d.addPairwiseGaussian(sxy=g["sxy"], compat=g["compat"])
    d.addPairwiseBilateral(sxy=b["sxy"], srgb=b["srgb"], rgbim=np.ascontiguousarray(img, dtype=np.uint8), compat=b["compat"])
    return np.array(d.inference(cfg["iterations"]), dtype=np.float32).reshape(n_labels, h, w)


def crf_labels(img: np.ndarray, labels: np.ndarray, n_labels: int, cfg: dict) -> np.ndarray:
    """Refine a label map (values 0..n_labels-1) with unary_from_labels(gt_prob); returns the argmax."""
    if n_labels < 2:
        return labels.copy()
    unary = unary_from_labels(labels.astype(np.int64).ravel(), n_labels, gt_prob=cfg["gt_prob"], zero_unsure=False)
    return np.argmax(_crf(img, unary, n_labels, cfg), axis=0)


def crf_probs(img: np.ndarray, probs: np.ndarray, cfg: dict) -> np.ndarray:
    """Refine class probabilities (n, H, W) summing to 1 over n; returns refined probabilities. The unary is
    pydensecrf's unary_from_softmax with its default clip, as the reference calls it: -log max(p, 1e-5)."""
    return _crf(img, unary_from_softmax(probs), probs.shape[0], cfg)
