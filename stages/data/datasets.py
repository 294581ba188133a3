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


def epoch_generator(epoch: int, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    """The shuffled sample order of an epoch; it depends only on (seed, epoch), so that every process draws the same."""
    g = epoch_generator(epoch, seed)
    torch.empty((), dtype=torch.int64).random_(generator=g)  # the loader's base seed is this first draw (epoch_loader)
    return torch.randperm(n, generator=g).tolist()


def shard_batches(order: list[int], batch_size: int, rank: int = 0, world: int = 1, accumulate: int = 1) -> list[list[int]]:
    """The micro-batches of process ``rank``: each global batch of ``batch_size`` (the last partial one dropped)
    is cut into ``world * accumulate`` equal slices, micro-step j of rank r taking slice ``j * world + r``; the
    slices of all processes and micro-steps together are exactly the global batch."""
    micro = batch_size // (world * accumulate)
    batches = [order[s:s + batch_size] for s in range(0, len(order) - batch_size + 1, batch_size)]
    return [b[(j * world + rank) * micro:(j * world + rank + 1) * micro] for b in batches for j in range(accumulate)]


def epoch_loader(dataset: TrainSamples, batch_size: int, epoch: int, seed: int, loader_kwargs: dict,
                 rank: int = 0, world: int = 1, accumulate: int = 1) -> DataLoader:
    """The micro-batches of process ``rank`` in one epoch, from the global batches of the (seed, epoch) order."""
    dataset.set_epoch(epoch)
    order = epoch_order(len(dataset), epoch, seed)
    # the loader draws its base seed from its own generator, not from the global RNG, whose stream (dropout) then
    # does not depend on how many loaders were made
    return DataLoader(dataset, batch_sampler=shard_batches(order, min(batch_size, len(dataset)), rank, world, accumulate),
                      generator=epoch_generator(epoch, seed), **loader_kwargs)
