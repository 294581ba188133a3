"""DeepLabv3+ inference shared by predict_segmentation (a split of the dataset) and segment (a folder of new
photos): same-size images batched through the multi-scale + flip logits, their softmax, then the dense CRF and
the argmax in the process pool while the next batch runs on the device."""
from __future__ import annotations

import functools
import weakref

import numpy as np
import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from stages.core.parallel import imap
from stages.data.transforms import normalize
from stages.models.segmentation import PAD_TO, multiscale_logits
from stages.ops.crf import crf_probs
from stages.utils.batches import same_size_batches

# images per forward (each with its flips and scales); VOC's sizes repeat, so most batches fill up
BATCH_SIZE = 4


# the side of the probe that measures what a forward pass holds per pixel (memory_per_pixel)
PROBE = 64


class LiveBytes(TorchDispatchMode):
    """The most bytes that the tensors made under it held at once (each storage counted once, while a tensor on
    it lives)."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self._refs = 0, 0, {}

    def _release(self, ptr: int) -> None:
        count, nbytes = self._refs[ptr]
        if count == 1:
            del self._refs[ptr]
            self.live -= nbytes
        else:
            self._refs[ptr] = (count - 1, nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                ptr, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
                count, _ = self._refs.get(ptr, (0, nbytes))
                if count == 0:
                    self.live += nbytes
                self._refs[ptr] = (count + 1, nbytes)
                weakref.finalize(t, self._release, ptr)
        self.peak = max(self.peak, self.live)
        return out


def memory_per_pixel(model, rt) -> tuple[float, float]:
    """What a forward pass of ``model`` holds at its peak: (bytes per input pixel, bytes whatever the size), from
    two small probes (the activations of a convolutional network grow with the pixels; what autocast makes of
    the weights does not)."""
    peaks = []
    for side in (PROBE, 2 * PROBE):
        x = torch.zeros(1, 3, side, side, device=rt.device)
        with torch.no_grad(), LiveBytes() as live, rt.autocast():
            model(x)
        peaks.append(live.peak)
    per_pixel = max(0.0, (peaks[1] - peaks[0]) / (3 * PROBE**2))
    return per_pixel, max(0.0, peaks[0] - per_pixel * PROBE**2)


def memory_needed(size: tuple[int, int], n_classes: int, cfg: dict, forward: tuple[float, float], batch: int,
                  crf_workers: int) -> tuple[int, int]:
    """About the bytes segmenting a batch of images of ``size`` takes: on the device, the largest scale's forward
    (with its flip) and the logits summed at the images' size; on the machine, the dense CRF of each worker (its
    unary, its two message buffers and its output: float32 per class and pixel). ``forward``: what
    :func:`memory_per_pixel` measured."""
    h, w = size
    per_pixel, fixed = forward
    padded = lambda n, s: -(-max(PAD_TO, round(n * s)) // PAD_TO) * PAD_TO  # noqa: E731
    scaled = max(padded(h, s) * padded(w, s) for s in cfg["scales"])
    device = fixed + per_pixel * scaled * batch * (2 if cfg["flip"] else 1) + 3 * 4 * n_classes * h * w * batch
    host = 4 * 4 * n_classes * h * w * crf_workers if cfg["crf"]["iterations"] > 0 else 0
    return int(device), int(host)


def too_large(size: tuple[int, int], n_classes: int, cfg: dict, forward: tuple[float, float], rt,
              crf_workers: int, batch: int = 1) -> str | None:
    """Why a batch of images of ``size`` cannot be segmented in the memory there is now (None where it can)."""
    device, host = memory_needed(size, n_classes, cfg, forward, batch, crf_workers)
    machine = psutil.virtual_memory().available
    free = [(device, torch.cuda.mem_get_info(rt.device)[0], "GPU"), (host, machine, "memory")] \
        if rt.device.type == "cuda" else [(device + host, machine, "memory")]
    for need, have, what in free:
        if need > have:
            return (f"at {size[1]}x{size[0]} it needs about {need / 2**30:.1f} GiB of {what}, {have / 2**30:.1f} GiB "
                    "are free: segment it at a smaller size (--max-side, or data.max_side)")
    return None


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
