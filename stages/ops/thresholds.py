"""Background thresholds the pipeline chooses itself: from the classifier without masks (``auto``), or from a few
masks (``masks``).

Every threshold of the pipeline is a background score on max-normalised class maps: the affinity labels' confident
foreground and background (on the CAMs), the pseudo labels' background (on the random-walk maps). Each is chosen
per class from t*, the threshold at which a class's map best outlines the class:

- ``masks``: t* maximises the class's IoU against the masks;
- ``auto``, criterion ``deletion``: t* is the largest threshold whose region still holds all the class's evidence,
  the knee of the deletion curve: the classifier's score of the class on the image with that region erased stays at
  its floor up to t*, then rises as the erased region shrinks and leaves parts of the object standing;
- ``auto``, criterion ``otsu``: t* splits the class's map values into two groups of least within-group variance.

The affinity labels' thresholds then bracket the CAMs' t*: confident foreground a share of the way from t* to the
peak, confident background a share of t*. The random walk's beta is, with masks, the one whose maps score best and,
without, the one whose maps destroy each class with the smallest erased region (docs/thresholds.md: why, and where
it fails). A class seen in too few images keeps the published value (``auto``) or stops the run (``masks``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from stages.core.metrics import confusion, iou
from stages.data.transforms import normalize
from stages.ops.cam import threshold_argmax

# The values the reference and IRN give VOC (PuzzleCAM's README: fg 0.40, bg 0.10, threshold 0.35; IRN's beta 10):
# what a class too rare to measure keeps, and the baseline of bench/thresholds.py.
PUBLISHED = {"fg_threshold": 0.40, "bg_threshold": 0.10, "beta": 10, "threshold": 0.35}


def candidates(cfg: dict) -> np.ndarray:
    """The background thresholds tried: ``cfg['candidates']`` {start, stop, step}, both ends included."""
    c = cfg["candidates"]
    n = int(round((c["stop"] - c["start"]) / c["step"])) + 1
    return np.round(c["start"] + np.arange(n) * c["step"], 4)


def per_class(value, keys):
    """A threshold as a stage applies it to an image's maps: a number as it is, or a list of one value per class
    (class id c at c - 1, as :func:`by_class_id` writes it) as one value per map, for the class ids ``keys``."""
    if not isinstance(value, list):
        return value
    return np.asarray(value, np.float32)[np.asarray(keys, np.int64) - 1]


def by_class_id(values: dict[str, float], names: list[str], default: float) -> list[float]:
    """{class name: value} (a thresholds file's) as the list :func:`per_class` reads; a class without a value (no
    image holds it, so no map of it is thresholded) gets ``default``."""
    return [float(values.get(name, default)) for name in names]


def chosen_config(cfg: dict, chosen: dict | None, section: str, names: list[str]) -> dict:
    """Stage ``section``'s config with the values a thresholds file chose for it (``values[section]``: a number, or
    {class name: value}) in place of the configured ones; the config as it is without a file."""
    if chosen is None:
        return cfg
    values = chosen["values"].get(section, {})
    return {**cfg, **{k: by_class_id(v, names, PUBLISHED[k]) if isinstance(v, dict) else v for k, v in values.items()}}


def confident_pair(t_star: float, cfg: dict) -> tuple[float, float]:
    """(fg, bg) of the affinity labels around the CAMs' t*: fg ``fg_share`` of the way from t* to the peak (1),
    bg ``bg_share`` of t*."""
    share = cfg["confident"]
    return (round(float(t_star + (1.0 - t_star) * share["fg_share"]), 4), round(float(t_star * share["bg_share"]), 4))


# ---- the criteria: each maps a class's curves over the candidates to its t* (None: not measurable)


@dataclass
class Curves:
    """What the criteria read, per candidate threshold and class: the mean deletion score (the classifier's
    probability of the class with its region erased), the mean erased area (a fraction of the image), the IoU
    counts against masks where there are masks, the maps' values and the number of images."""
    thresholds: np.ndarray
    num_classes: int
    deletion: np.ndarray = None  # (T, C) sums
    area: np.ndarray = None  # (T, C) sums
    conf: np.ndarray = None  # (T, C + 1, C + 1) confusion counts against masks
    histogram: np.ndarray = None  # (C, BINS) counts of the class maps' values
    images: np.ndarray = None  # (C,) images holding each class

    BINS = 100

    def __post_init__(self):
        t, c = len(self.thresholds), self.num_classes
        self.deletion = np.zeros((t, c))
        self.area = np.zeros((t, c))
        self.conf = np.zeros((t, c + 1, c + 1), np.int64)
        self.histogram = np.zeros((c, self.BINS), np.int64)
        self.images = np.zeros(c, np.int64)


def knee(curve: np.ndarray, thresholds: np.ndarray, tolerance: float, min_rise: float) -> float | None:
    """The largest threshold at which ``curve`` (rising with the threshold) stays within ``tolerance`` of its
    range above its floor; None where it barely rises (by less than ``min_rise``): nothing to read."""
    floor, top = float(curve.min()), float(curve.max())
    if top - floor < min_rise:
        return None
    return float(thresholds[np.nonzero(curve <= floor + tolerance * (top - floor))[0].max()])


def otsu(histogram: np.ndarray) -> float | None:
    """Otsu's threshold of values in [0, 1] counted in ``len(histogram)`` equal bins (the upper edge of the last
    bin of the lower group); None without values."""
    total = histogram.sum()
    if total == 0:
        return None
    p = histogram / total
    edges = np.linspace(0.0, 1.0, len(histogram) + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    w0, mu = np.cumsum(p), np.cumsum(p * mids)
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between)] = -1.0
    return float(edges[1:][int(np.argmax(between))])


def _deletion(curves: Curves, c: int, cfg: dict) -> float | None:
    n = curves.images[c]
    return knee(curves.deletion[:, c] / n, curves.thresholds, cfg["tolerance"], cfg["min_rise"])


def _otsu(curves: Curves, c: int, cfg: dict) -> float | None:
    t = otsu(curves.histogram[c])
    # the candidate nearest Otsu's value: every choice is one of the thresholds tried
    return None if t is None else float(curves.thresholds[np.abs(curves.thresholds - t).argmin()])


def _masks(curves: Curves, c: int, cfg: dict) -> float | None:
    ious = np.array([iou(conf)[c + 1] for conf in curves.conf])
    return None if np.all(np.isnan(ious)) else float(curves.thresholds[int(np.nanargmax(ious))])


CRITERIA: dict[str, Callable[[Curves, int, dict], float | None]] = {"deletion": _deletion, "otsu": _otsu, "masks": _masks}


# ---- measuring


def erased(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The normalised image (3, H, W) with ``region`` (H, W) set to the mean colour (0 after normalisation)."""
    return x * ~region


def class_scores(model, batch: list[torch.Tensor], rt) -> np.ndarray:
    """The classifier's probabilities (B, C) of same-size normalised images: sigmoid of the pooled class maps."""
    with torch.no_grad(), rt.autocast():
        maps = model(torch.stack(batch).to(rt.device))
    return torch.sigmoid(maps.float().mean((2, 3))).cpu().numpy()


def measure(curves: Curves, samples: Iterable, model=None, rt=None, batch_size: int = 32) -> Curves:
    """Add each (RGB image, maps (K, H, W) max-normalised, class ids, mask or None) of ``samples`` to ``curves``: the
    maps' histogram and each class's area at every candidate; with a ``model``, the deletion score; with a mask, the
    confusion. Returns ``curves``."""
    ts = curves.thresholds
    for img, maps, keys, mask in samples:
        keys = [int(c) for c in keys]
        for k, c in enumerate(keys):
            curves.images[c - 1] += 1
            curves.histogram[c - 1] += np.histogram(maps[k], bins=Curves.BINS, range=(0.0, 1.0))[0]
        x = normalize(img) if model is not None else None
        jobs = []
        for j, t in enumerate(ts):
            index = threshold_argmax(maps, t)
            if mask is not None:
                curves.conf[j] += confusion(np.asarray([0, *keys], np.uint8)[index], mask, curves.num_classes + 1)
            for k, c in enumerate(keys):
                region = index == k + 1
                curves.area[j, c - 1] += region.mean()
                if model is not None:
                    jobs.append((j, c - 1, torch.from_numpy(region)))
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            probs = class_scores(model, [erased(x, r) for _, _, r in chunk], rt)
            for (j, c, _), p in zip(chunk, probs):
                curves.deletion[j, c] += p[c]
    return curves


# ---- choosing


@dataclass
class Choice:
    """t* of each measured class (by name), what each class with images was measured on (images, source: the
    criterion or ``published``), and the warnings of the classes left at the published values."""
    t_star: dict[str, float] = field(default_factory=dict)
    classes: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class TooFewImages(ValueError):
    pass


def choose(curves: Curves, names: list[str], criterion: str, cfg: dict, what: str, published: str) -> Choice:
    """t* of every class of ``names`` with images, by ``criterion``. A class in fewer than ``min_images`` images, or
    whose curves say nothing, gets no t* (it keeps the ``published`` values) and a warning under ``auto``, and stops
    ``masks`` (TooFewImages naming the class)."""
    choice = Choice()
    for c, name in enumerate(names):
        n = int(curves.images[c])
        if n == 0:
            continue  # a class without images gets no map anywhere: nothing uses its threshold
        t = CRITERIA[criterion](curves, c, cfg) if n >= cfg["min_images"] else None
        if t is None and criterion == "masks":
            raise TooFewImages(f"class {name!r} is in {n} of its images with masks, fewer than choose_thresholds.min_images "
                               f"({cfg['min_images']})" if n < cfg["min_images"] else
                               f"class {name!r} is in none of its {n} images' masks")
        if t is None:
            reason = (f"is in {n} image{'s' * (n != 1)} (choose_thresholds.min_images: {cfg['min_images']})"
                      if n < cfg["min_images"] else "has a flat deletion curve")
            choice.warnings.append(f"{what}: class {name!r} {reason}: too rare to measure, it keeps the published "
                                   f"{published}")
            choice.classes[name] = {"images": n, "source": "published"}
        else:
            choice.t_star[name] = t
            choice.classes[name] = {"images": n, "source": criterion, "t_star": t}
    return choice


def beta_score(curves: Curves, choice: Choice, names: list[str], criterion: str) -> float:
    """How well one beta's maps do, higher better: with masks, the mean IoU of the measured classes at their t*;
    without, minus their mean area at t*: the walk whose maps outline each class in the least area (one that floods
    the background outlines more)."""
    ts = list(curves.thresholds)
    measured = [(c, ts.index(choice.t_star[n])) for c, n in enumerate(names) if n in choice.t_star]
    if not measured:
        return float("-inf")
    if criterion == "masks":
        return float(np.mean([iou(curves.conf[j])[c + 1] for c, j in measured]))
    return -float(np.mean([curves.area[j, c] / curves.images[c] for c, j in measured]))


# ---- which images


def sample_ids(ids: list[str], n: int, seed: int) -> list[str]:
    """At most ``n`` of ``ids``, drawn with ``seed`` and kept in their order: the images ``auto`` measures."""
    if len(ids) <= n:
        return list(ids)
    keep = set(np.random.default_rng(seed).choice(len(ids), n, replace=False).tolist())
    return [i for k, i in enumerate(ids) if k in keep]

