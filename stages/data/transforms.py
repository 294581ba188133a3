"""Joint image/mask augmentation for training, and normalisation.

Randomness comes from a generator seeded by (seed, epoch, index), so a run and its
resumed continuation see exactly the same samples whatever the number of workers.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from stages.data.voc import IGNORE

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def normalize(img: np.ndarray) -> torch.Tensor:
    """RGB uint8 H x W x 3 -> float 3 x H x W, ImageNet-normalised."""
    x = (img.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def resize_normalized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Normalised images (B, 3, H, W) at ``size`` (height, width) as the reference resizes each photo before
    normalising it: back to 8-bit RGB, PIL's bicubic filter, normalised again (on the images' device)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    mean, std = (torch.as_tensor(v, device=images.device).view(1, 3, 1, 1) for v in (MEAN, STD))
    rgb = (images * std + mean).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    resized = [normalize(pil_resize(img, (size[1], size[0]))) for img in rgb]
    return torch.stack(resized).to(images.device)


def pil_resize(img: np.ndarray, size: tuple[int, int], resample=Image.BICUBIC) -> np.ndarray:
    """An RGB or label array at ``size`` (width, height) with PIL's filter, as the reference's augmentation."""
    return np.asarray(Image.fromarray(img).resize(size, resample))


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def random_resize_long(img, mask, long_range, rng):
    long_side = rng.integers(long_range[0], long_range[1] + 1)
    h, w = img.shape[:2]
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = pil_resize(img, size)  # the reference's RandomResize: PIL bicubic, masks nearest
    if mask is not None:
        mask = pil_resize(mask, size, Image.NEAREST)
    return img, mask


def random_flip(img, mask, rng):
    if rng.random() < 0.5:
        img = img[:, ::-1]
        mask = mask[:, ::-1] if mask is not None else None
    return img, mask


def random_crop(img, mask, size, rng):
    """Crop ``size`` x ``size``; a side smaller than that is placed at a random offset in the crop, as the
    reference does, the rest padded (image with the mean, mask with 255)."""
    h, w = img.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        border = (top, ph - top, left, pw - left)
        img = cv2.copyMakeBorder(np.ascontiguousarray(img), *border, cv2.BORDER_CONSTANT, value=MEAN.tolist())
        if mask is not None:
            mask = cv2.copyMakeBorder(np.ascontiguousarray(mask), *border, cv2.BORDER_CONSTANT, value=IGNORE)
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    img = img[y : y + size, x : x + size]
    mask = mask[y : y + size, x : x + size] if mask is not None else None
    return img, mask


def train_transform(img, mask, cfg: dict, rng):
    """Random long-side resize, horizontal flip, crop: the paper's training augmentation."""
    img, mask = random_resize_long(img, mask, cfg["resize_long"], rng)
    img, mask = random_flip(img, mask, rng)
    img, mask = random_crop(img, mask, cfg["crop_size"], rng)
    return np.ascontiguousarray(img), (np.ascontiguousarray(mask) if mask is not None else None)
