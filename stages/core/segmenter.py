"""DeepLabv3+ inference shared by predict_segmentation (a split of the dataset) and segment (a folder of new
photos): same-size images batched through the multi-scale + flip logits, their softmax, then the dense CRF and
the argmax in the process pool while the next batch runs on the device."""
from __future__ import annotations

import functools

import numpy as np
import torch

from stages.core.parallel import imap
from stages.data.transforms import normalize
from stages.models.segmentation import multiscale_logits
from stages.ops.crf import crf_probs
from stages.utils.batches import same_size_batches

# images per forward (each with its flips and scales); VOC's sizes repeat, so most batches fill up
BATCH_SIZE = 4


def class_probabilities(model, images: list[np.ndarray], cfg: dict, rt) -> list[np.ndarray]:
    """The class probabilities (C, H, W) of same-size RGB images, float16 (what the CRF workers receive)."""
    x = torch.stack([normalize(img) for img in images]).to(rt.device, non_blocking=True)
    probs = torch.softmax(multiscale_logits(model, x, cfg["scales"], cfg["flip"], rt.autocast), 1)
    return list(probs.cpu().numpy().astype(np.float16))


def label_map(image: np.ndarray, probs: np.ndarray, crf: dict) -> np.ndarray:
    """Dense CRF on the class probabilities (if enabled), then the argmax: uint8 class ids at the image's size."""
    if crf["iterations"] > 0:
        probs = crf_probs(image, probs.astype(np.float32), crf)
    return np.argmax(probs, axis=0).astype(np.uint8)


def _finish(item, crf: dict, finish):
    key, image, probs = item
    return finish(key, image, label_map(image, probs, crf))


def segment(model, images, cfg: dict, rt, processes: int, finish, batch_size: int = BATCH_SIZE):
    """``finish(key, image, label map)`` of each (key, RGB image) of ``images``, in the pool; yields its results.
    ``finish`` runs in a forked worker: it writes files, its result should be small."""

    def probabilities():
        for batch in same_size_batches(images, batch_size):
            probs = class_probabilities(model, [img for _, img in batch], cfg, rt)
            yield from ((key, img, p) for (key, img), p in zip(batch, probs))

    yield from imap(functools.partial(_finish, crf=cfg["crf"], finish=finish), probabilities(), processes)
