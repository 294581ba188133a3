"""Class activation maps: multi-scale + flip inference, normalisation, thresholding."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stages.data.transforms import resize_normalized


def strided_size(h: int, w: int, stride: int) -> tuple[int, int]:
    return (h + stride - 1) // stride, (w + stride - 1) // stride


def strided_up_size(h: int, w: int, stride: int) -> tuple[int, int]:
    """The size rounded up to a multiple of ``stride``: the reference resizes the strided maps to it and crops the
    image's size from its top-left, so a map cell lands where the network's stride puts it."""
    sh, sw = strided_size(h, w, stride)
    return sh * stride, sw * stride


def max_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each class map (K, H, W) by its maximum (+eps), after ReLU."""
    cam = F.relu(cam)
    return cam / (cam.flatten(1).max(dim=1).values[:, None, None] + eps)


# the classifier's output stride: its maps are resized to the image size rounded up to a multiple of it
CAM_STRIDE = 16


def multiscale_cam(model, image: torch.Tensor, scales, flip: bool, classes: list[int], autocast, s4_stride: int = 4):
    """CAMs of one normalised image (3, H, W): :func:`multiscale_cams` of a batch of one."""
    return multiscale_cams(model, image[None], scales, flip, [classes], autocast, s4_stride)[0]


@torch.no_grad()
def multiscale_cams(model, images: torch.Tensor, scales, flip: bool, classes: list[list[int]], autocast, s4_stride: int = 4):
    """CAMs of a batch of same-size normalised images (B, 3, H, W), for each image's class ids (1..C).

    Each scale resizes the batch as the reference resizes the photo (:func:`resize_normalized`) and runs it with
    its horizontal flips in one forward; maps are ReLU'd, flipped back, resized to the image size rounded up to a
    multiple of 16 (then cropped to the image) and to stride 4, and summed, then max-normalised, as the reference.
    Returns one (cam (K, H, W), cam_s4 (K, ceil(H/4), ceil(W/4))) pair of float32 CPU tensors per image.
    """
    b, _, h, w = images.shape
    s4 = strided_size(h, w, s4_stride)
    up = strided_up_size(h, w, CAM_STRIDE)
    # the maps of every image's own classes, stacked along channels: one resize call serves the batch
    sample = torch.cat([torch.full((len(c),), i) for i, c in enumerate(classes)]).long().to(images.device)
    channel = torch.as_tensor([k - 1 for c in classes for k in c], dtype=torch.long, device=images.device)
    if not len(channel):  # no image of the batch has a class (a mask of background alone): no map to resize
        return [(torch.zeros(0, h, w), torch.zeros(0, *s4)) for _ in classes]
    full = torch.zeros(1, len(channel), *up, device=images.device)
    low = torch.zeros(1, len(channel), *s4, device=images.device)
    for s in scales:
        x = resize_normalized(images, (max(1, round(h * s)), max(1, round(w * s))))
        if flip:
            x = torch.cat([x, x.flip(-1)])
        with autocast():
            a = model(x)
        a = F.relu(a.float())
        a = a[:b] + a[b:].flip(-1) if flip else a
        a = a[sample, channel][None]
        full += F.interpolate(a, size=up, mode="bilinear", align_corners=False)
        low += F.interpolate(a, size=s4, mode="bilinear", align_corners=False)
    sizes = [len(c) for c in classes]
    full = full[..., :h, :w]
    return [(max_normalize(f), max_normalize(s)) for f, s in zip(full[0].cpu().split(sizes), low[0].cpu().split(sizes))]


def threshold_argmax(cam: np.ndarray, threshold) -> np.ndarray:
    """Index map over [background at ``threshold``, class maps]: 0 background, k the k-th map. ``threshold`` is one
    number, or one per map (K,): then each map is compared at its own, as map / threshold against 1 (the same
    labels as one number where all are equal)."""
    if np.ndim(threshold) == 0:
        scores = np.concatenate([np.full((1, *cam.shape[1:]), threshold, cam.dtype), cam], axis=0)
    else:
        scaled = cam / np.asarray(threshold, cam.dtype).reshape(-1, *([1] * (cam.ndim - 1)))
        scores = np.concatenate([np.ones((1, *cam.shape[1:]), cam.dtype), scaled], axis=0)
    return np.argmax(scores, axis=0)


def with_background(keys) -> np.ndarray:
    """Class ids of the index maps of :func:`threshold_argmax`: [0, *keys]."""
    return np.concatenate([[0], np.asarray(keys)]).astype(np.uint8)


def cam_to_label(cam: np.ndarray, keys, threshold) -> np.ndarray:
    """Class-id map (0 = background) of class maps with a constant background channel."""
    return with_background(keys)[threshold_argmax(cam, threshold)]
