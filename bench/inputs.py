"""Generated VOC-sized inputs: synthetic shape images, their masks and image-level labels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.data.synthetic import SHAPES, make_sample

NUM_CLASSES = 20  # VOC's foreground classes: the classifier and DeepLabv3+ heads have VOC's width
SAMPLE = {"max_objects": 3, "max_clutter": 5, "p_cooccur": 0.4, "p_class_colour": 0.85,
          "object_scale": [0.15, 0.32], "min_visible": 0.02, "body_saturation": [140, 255], "part_scale": None}


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # H x W x 3 uint8
    mask: np.ndarray  # H x W uint8, 0 background, c class c
    keys: list[int]  # class ids present (1..NUM_CLASSES)


def samples(n: int, height: int, width: int, seed: int = 0) -> list[Sample]:
    """``n`` images of ``height`` x ``width``: crops of square synthetic scenes."""
    rng = np.random.default_rng(seed)
    shapes = sorted(SHAPES)
    out = []
    for _ in range(n):
        img, mask = make_sample(rng, shapes, max(height, width), SAMPLE)
        img, mask = np.ascontiguousarray(img[:height, :width]), np.ascontiguousarray(mask[:height, :width])
        keys = [int(c) for c in np.unique(mask) if c] or [1]
        out.append(Sample(img, mask, keys))
    return out


def noisy_labels(sample: Sample, rng, flip: float = 0.1) -> tuple[np.ndarray, int]:
    """A label map over [background, *keys] with a fraction ``flip`` of pixels changed: a CRF input."""
    ids = np.concatenate([[0], sample.keys])
    lut = np.zeros(256, np.int64)
    lut[ids] = np.arange(len(ids))
    labels = lut[sample.mask]
    noise = rng.random(labels.shape) < flip
    labels[noise] = rng.integers(0, len(ids), int(noise.sum()))
    return labels, len(ids)
