"""torch Datasets over a VOC layout for the three trained models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stages.data.transforms import normalize, sample_rng, train_transform
from stages.data.voc import read_image, read_mask, resize_labels


class TrainSamples(Dataset):
    """Augmented (image, mask, multi-hot label) samples.

    ``masks`` may be None (classification only); ``labels`` maps id -> class ids. Images are read with
    their longest side capped at ``max_side``, masks resized to them.
    Call :meth:`set_epoch` before each epoch: augmentation depends on (seed, epoch, index).
    """

    def __init__(self, image_paths, cfg: dict, seed: int, masks=None, labels=None, num_classes: int = 0,
                 max_side: int | None = None):
        self.image_paths = [Path(p) for p in image_paths]
        self.mask_paths = [Path(p) for p in masks] if masks is not None else None
        self.labels = labels
        self.num_classes = num_classes
        self.cfg = cfg
        self.seed = seed
        self.epoch = 0
        self.max_side = max_side

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.image_paths)

    def __getitem__(self, i):
        img = read_image(self.image_paths[i], self.max_side)
        mask = resize_labels(read_mask(self.mask_paths[i]), img.shape) if self.mask_paths is not None else None
        img, mask = train_transform(img, mask, self.cfg, sample_rng(self.seed, self.epoch, i))
        out = {"image": normalize(img), "index": i}
        if mask is not None:
            out["mask"] = torch.from_numpy(mask.astype(np.int64))
        if self.labels is not None:
            y = torch.zeros(self.num_classes)
            for c in self.labels[i]:
                y[c - 1] = 1.0
            out["label"] = y
        return out


def epoch_loader(dataset: TrainSamples, batch_size: int, epoch: int, seed: int, loader_kwargs: dict) -> DataLoader:
    """A shuffled loader whose order depends only on (seed, epoch)."""
    dataset.set_epoch(epoch)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=True,
        drop_last=True,
        generator=g,
        **loader_kwargs,
    )
