"""The process group of a training stage that ``torchrun`` starts once per GPU (DistributedDataParallel).

Without torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) the world is one process and nothing is set up:
a training stage runs exactly as it does alone. Under torchrun every process joins one group (nccl on CUDA,
gloo on the CPU), rank r computes on ``cuda:LOCAL_RANK`` and draws random streams of its own (rank 0 those of a
process alone), and the group is destroyed when the stage ends, also on an error.
"""
from __future__ import annotations

import contextlib
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from timm.layers import convert_sync_batchnorm
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from stages.core.host import World, world_from_env
from stages.core.runtime import seed_everything

log = logging.getLogger("stages")


def world() -> World:
    """The world of the running process group; one process where none is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    return world().main


def barrier() -> None:
    """Wait for every process of the group (nothing to wait for alone)."""
    if world().size > 1:
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s random streams: ``seed`` itself on rank 0, so that it draws what a process alone
    draws, one of their own on the others (else every process would draw the same dropout masks). The data order
    does not depend on them (stages/data/datasets.py draws it from a generator of its own)."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


@contextlib.contextmanager
def process_group(device: torch.device, seed: int, environ=os.environ, backend: str | None = None):
    """Join torchrun's group for the duration of the block (nccl on CUDA, pinned to cuda:LOCAL_RANK; gloo on
    the CPU; ``backend`` where given), each process seeded with :func:`rank_seed`; only rank 0 logs at INFO, the
    others' lines would repeat its own. One process: nothing to do."""
    w = world_from_env(environ)
    if w.size == 1:
        yield w
        return
    if device.type == "cuda":
        torch.cuda.set_device(w.local_rank)
    dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    seed_everything(rank_seed(seed, w.rank))
    if not w.main:
        log.setLevel(logging.WARNING)
    try:
        yield w
    finally:
        dist.destroy_process_group()


def all_gather(obj) -> list:
    """``obj`` of every process, in rank order ([obj] alone)."""
    if world().size == 1:
        return [obj]
    out = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each value averaged over the processes (itself alone)."""
    if world().size == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, (t / world().size).tolist()))


def sync_training_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm in training mode made a SyncBatchNorm (timm's, which keeps BatchNormAct's activation), in
    place: its statistics span the global batch. Frozen ones (eval mode: the segmentation encoder's, the affinity
    backbone's) stay as they are, so that the models' ``train()`` still finds and freezes them."""
    model.train()
    for name, m in list(model.named_modules()):
        if isinstance(m, _BatchNorm) and m.training and not isinstance(m, nn.SyncBatchNorm) and name:
            model.set_submodule(name, convert_sync_batchnorm(m))
    return model


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module a training step calls: ``model`` itself alone, DistributedDataParallel over the group otherwise.

    SyncBatchNorm computes on CUDA only: on the CPU (gloo) each process normalises over its own part of the batch."""
    if world().size == 1:
        return model
    if device.type == "cuda":
        sync_training_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
    return DistributedDataParallel(model)
