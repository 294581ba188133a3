"""A generated dataset in the PASCAL VOC layout.

Each class is a shape (registry below) whose colour usually, but not always, comes
from a class-specific hue range, filled with a striped texture. Objects overlap
(occlusion), images hold one or two co-occurring classes, and the background is a
muted textured field with clutter (thin strokes and blobs in any colour). A
classifier can tell the classes from colour and from parts of the outline, so its
CAMs cover only part of each object and the later stages have real work to do.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from stages import StageError

SHAPES = {}


def register_shape(fn):
    SHAPES[fn.__name__] = fn
    return fn


def _polygon(canvas, points):
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return canvas


def _rotated(points, angle):
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


@register_shape
def disc(canvas, cy, cx, r, angle, rng):
    axes = (int(r), int(r * rng.uniform(0.75, 1.0)))
    cv2.ellipse(canvas, (int(cx), int(cy)), axes, math.degrees(angle), 0, 360, 1, -1)
    return canvas


@register_shape
def square(canvas, cy, cx, r, angle, rng):
    a, b = r * 0.85, r * 0.85 * rng.uniform(0.75, 1.0)
    pts = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
    return _polygon(canvas, _rotated(pts, angle) + [cx, cy])


@register_shape
def triangle(canvas, cy, cx, r, angle, rng):
    t = np.array([-math.pi / 2, math.pi / 6, 5 * math.pi / 6])
    pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    return _polygon(canvas, _rotated(pts, angle) + [cx, cy])


@register_shape
def cross(canvas, cy, cx, r, angle, rng):
    w = r * 0.38
    arm = np.array([[-r, -w], [r, -w], [r, w], [-r, w]])
    for rot in (angle, angle + math.pi / 2):
        _polygon(canvas, _rotated(arm, rot) + [cx, cy])
    return canvas


@register_shape
def star(canvas, cy, cx, r, angle, rng):
    t = np.arange(10) * math.pi / 5
    rad = np.where(np.arange(10) % 2 == 0, r, r * 0.5)
    pts = np.stack([np.cos(t) * rad, np.sin(t) * rad], 1)
    return _polygon(canvas, _rotated(pts, angle) + [cx, cy])


@register_shape
def ring(canvas, cy, cx, r, angle, rng):
    cv2.circle(canvas, (int(cx), int(cy)), int(r), 1, -1)
    cv2.circle(canvas, (int(cx), int(cy)), int(r * 0.5), 0, -1)
    return canvas


def _hsv_to_rgb(h, s, v) -> np.ndarray:
    px = np.uint8([[[h % 180, s, v]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def background(size: int, rng) -> np.ndarray:
    """Muted low-frequency colour field with grain and faint strokes."""
    grid = rng.integers(3, 7)
    hue = rng.uniform(0, 180)
    base = np.stack(
        [_hsv_to_rgb(hue + rng.uniform(-25, 25), rng.uniform(10, 70), rng.uniform(70, 200)) for _ in range(grid * grid)]
    ).reshape(grid, grid, 3)
    img = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 7, img.shape)
    for _ in range(rng.integers(2, 6)):
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        shade = float(rng.uniform(-35, 35))
        cv2.line(img, tuple(map(int, p1)), tuple(map(int, p2)), tuple(float(c) + shade for c in img[p1[1], p1[0]]), 1)
    return img


def clutter(img, size: int, n: int, rng) -> None:
    """Strokes and small blobs in any colour: background, but not plain."""
    for _ in range(n):
        colour = tuple(float(c) for c in _hsv_to_rgb(rng.uniform(0, 180), rng.uniform(60, 255), rng.uniform(60, 255)))
        if rng.random() < 0.5:
            p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
            cv2.line(img, tuple(map(int, p1)), tuple(map(int, p2)), colour, int(rng.integers(1, 3)))
        else:
            c = tuple(map(int, rng.integers(0, size, 2)))
            axes = (int(rng.integers(2, max(3, size // 14))), int(rng.integers(1, max(2, size // 30))))
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)


def texture(size: int, colour: np.ndarray, rng) -> np.ndarray:
    """The object's fill: its colour with stripes of random period and orientation."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta, period = rng.uniform(0, math.pi), rng.uniform(4, 10)
    stripes = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
    amp = rng.uniform(10, 30)
    return colour[None, None, :] + amp * stripes[..., None]


def class_hue(c: int, n_cls: int, rng) -> float:
    """A hue (OpenCV's 0..180) of class ``c``'s range: ``n_cls`` ranges spread over the hue circle."""
    return 180.0 * c / n_cls + rng.uniform(-8, 8)


def object_colour(c: int, n_cls: int, cfg: dict, rng) -> np.ndarray:
    """An object's body colour: its class's hue with probability ``p_class_colour`` (any hue otherwise), at a
    saturation drawn from ``body_saturation``: a low one leaves the body only a faint cast of its class's hue."""
    hue = class_hue(c, n_cls, rng) if rng.random() < cfg["p_class_colour"] else rng.uniform(0, 180)
    return _hsv_to_rgb(hue, rng.uniform(*cfg["body_saturation"]), rng.uniform(120, 255))


def part_of(body: np.ndarray, cy: float, cx: float, r: float, scale, shape: str, rng) -> np.ndarray:
    """A part of an object (a mask inside ``body``): a ``shape`` of ``scale`` (low, high) times the object's size,
    its centre drawn within the inner half of the object, clipped to the body."""
    pr = rng.uniform(*scale) * r
    dist, angle = rng.uniform(0, 0.5) * r, rng.uniform(0, 2 * math.pi)
    canvas = np.zeros_like(body)
    SHAPES[shape](canvas, cy + dist * math.sin(angle), cx + dist * math.cos(angle), pr, rng.uniform(0, 2 * math.pi), rng)
    return canvas & body


def part_colour(c: int, n_cls: int, rng) -> np.ndarray:
    """A part's colour: always its class's hue, saturated and bright (the object's most discriminative cue)."""
    return _hsv_to_rgb(class_hue(c, n_cls, rng), rng.uniform(220, 255), rng.uniform(200, 255))


def make_sample(rng, classes, size: int, cfg: dict):
    """One (RGB uint8 image, uint8 mask) pair with at least one object of at least one class.

    With ``part_scale``, each object also gets a part of its class's strong colour (:func:`part_of`), the rest of
    it (the body) keeping its own colour: with a low ``body_saturation``, a classifier can tell an object from its
    part alone, while the body's shape and faint hue are weaker cues of the same class."""
    n_cls = len(classes)
    part_scale = cfg["part_scale"]
    for _ in range(100):
        img = background(size, rng)
        clutter(img, size, int(rng.integers(0, cfg["max_clutter"] + 1)), rng)
        mask = np.zeros((size, size), np.uint8)
        k = 2 if (n_cls > 1 and rng.random() < cfg["p_cooccur"]) else 1
        present = rng.choice(n_cls, size=k, replace=False)
        n_obj = max(k, int(rng.integers(1, cfg["max_objects"] + 1)))
        owners = np.concatenate([present, rng.choice(present, size=n_obj - k)])
        for c in rng.permutation(owners):
            r = rng.uniform(*cfg["object_scale"]) * size
            cy, cx = rng.uniform(r * 0.6, size - r * 0.6, 2)
            shape = np.zeros((size, size), np.uint8)
            SHAPES[classes[c]](shape, cy, cx, r, rng.uniform(0, 2 * math.pi), rng)
            fill = texture(size, object_colour(c, n_cls, cfg, rng), rng)
            img[shape > 0] = fill[shape > 0]
            mask[shape > 0] = c + 1
            if part_scale:
                part = part_of(shape, cy, cx, r, part_scale, cfg["part_shape"], rng)
                fill = texture(size, part_colour(c, n_cls, rng), rng)
                img[part > 0] = fill[part > 0]
        min_px = cfg["min_visible"] * size * size
        if all((mask == c + 1).sum() >= min_px for c in present):
            img = cv2.GaussianBlur(img, (3, 3), 0.6)
            return np.clip(img, 0, 255).astype(np.uint8), mask
    raise StageError("config data.generate: could not place objects; lower min_visible or raise object_scale")


def unknown_shapes(classes) -> list[str]:
    return [c for c in classes if c not in SHAPES]
