"""The training loop shared by the classifier, AffinityNet and DeepLabv3+: SGD with poly decay (power 0.9) per
iteration, epoch after epoch, a checkpoint after each (stages/core/checkpoint.py: what is saved and resumed), the
per-epoch mean of every loss term in the history.

:func:`fit` sets up and runs the epochs; :func:`train_one_epoch` runs the steps of one; :func:`optimizer_step` is one
step over the micro-batches of a global batch. Read top to bottom, they are the loop.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch

from stages import StageError
from stages.core import checkpoint as checkpoints
from stages.core import distributed
from stages.core.checkpoint import TrainState
from stages.core.runtime import Runtime
from stages.data.datasets import TrainSamples, epoch_loader
from stages.utils.progress import track

log = logging.getLogger("stages")


class Terms(dict):
    """A step's loss terms by name, 'total' among them, and ``scalars``: the values the step computed them with (the
    classifier's alpha), reported beside them, so that what is logged is what the loss used."""

    def __init__(self, losses: dict[str, torch.Tensor], scalars: dict[str, float] | None = None):
        super().__init__(losses)
        self.scalars = dict(scalars or {})


class NonFiniteLoss(Exception):
    """A step's loss terms that are not all finite; :func:`fit` says where, and which checkpoint is the last good one."""

    def __init__(self, iteration: int, values: dict[str, float]):
        super().__init__(iteration, values)
        self.iteration, self.values = iteration, values


# a training step: (batch, iteration, max_iteration) -> its loss terms (Terms, or a plain dict without scalars)
Step = Callable[[dict, int, int], dict[str, torch.Tensor]]
# what the loop reports after each optimizer step: (iteration, loss terms, lr, the step's scalars)
OnStep = Callable[[int, dict[str, float], float, dict[str, float]], None]


def poly_lambda(max_iteration: int, power: float = 0.9):
    return lambda it: (1 - min(it, max_iteration) / max_iteration) ** power


def reference_sgd(param_groups, cfg: dict) -> torch.optim.SGD:
    """SGD as the reference's PolyOptimizer builds it: ``SGD(params, lr, weight_decay, nesterov=True)`` puts the
    weight decay in SGD's momentum slot (momentum 1e-4 for lr 0.1), the decay itself coming from each group.

    A bug there, but the paper's figures were reached with it: its step is about ``lr`` where real momentum m
    makes it ``lr / (1 - m)``, so ``sgd`` with momentum 0.9 needs a tenth of the lr for the same dynamics."""
    return torch.optim.SGD(param_groups, lr=cfg["lr"], momentum=cfg["weight_decay"], nesterov=True)


def momentum_sgd(param_groups, cfg: dict) -> torch.optim.SGD:
    """Nesterov SGD with the configured momentum (the weight decay from each group)."""
    return torch.optim.SGD(param_groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["momentum"] > 0)


OPTIMIZERS = {"reference": reference_sgd, "sgd": momentum_sgd}


def make_sgd(param_groups, cfg: dict) -> torch.optim.SGD:
    """The optimizer named by ``cfg['optimizer']``."""
    return OPTIMIZERS[cfg["optimizer"]](param_groups, cfg)


# lr multipliers and weight decay of the reference's four groups: (pretrained | new) x (weights | biases)
GROUP_LR_MULT = {("pretrained", "weight"): 1.0, ("pretrained", "bias"): 2.0, ("new", "weight"): 10.0, ("new", "bias"): 20.0}


def reference_param_groups(model: torch.nn.Module, is_new: Callable[[str], bool], cfg: dict) -> list[dict]:
    """The reference's parameter groups: a parameter whose name has "weight" in it (convolutions and norm scales)
    is a weight, decayed; any other (biases, norm shifts) a bias, at twice the lr and not decayed; new layers
    (``is_new(name)``) at 10x. Frozen parameters are left out."""
    groups: dict[tuple[str, str], list] = {k: [] for k in GROUP_LR_MULT}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[("new" if is_new(name) else "pretrained", "weight" if "weight" in name else "bias")].append(p)
    return [
        {"params": params, "lr": cfg["lr"] * GROUP_LR_MULT[k], "weight_decay": cfg["weight_decay"] if k[1] == "weight" else 0.0}
        for k, params in groups.items() if params
    ]


def per_process_batch(batch_size: int, world: int, accumulate: int) -> int:
    """The micro-batch of one process and step: the global batch over ``world`` processes x ``accumulate`` steps."""
    if batch_size % (world * accumulate):
        raise StageError(f"batch_size {batch_size} is not divisible by {world} process(es) x accumulate {accumulate}; "
                         f"choose a batch_size that is a multiple of {world * accumulate}")
    return batch_size // (world * accumulate)


def _groups_of(iterable, n: int):
    """Consecutive groups of ``n`` items (the micro-batches of one optimizer step)."""
    group = []
    for item in iterable:
        group.append(item)
        if len(group) == n:
            yield group
            group = []


def fit(
    model: torch.nn.Module,
    param_groups,
    dataset: TrainSamples,
    make_step: Callable[[torch.nn.Module], Step],
    cfg: dict,
    rt: Runtime,
    checkpoint: Path,
    key: str,
    desc: str,
    on_step: OnStep | None = None,
    on_epoch: Callable[[dict, torch.nn.Module | None], None] | None = None,
) -> list[dict]:
    """Train ``model`` for ``cfg['epochs']``, resuming from ``checkpoint`` where it was written with ``key``;
    ``make_step(net)`` gives the step, ``net`` being the model itself, or its DistributedDataParallel wrapper under
    torchrun. Returns the history: one row per epoch with the mean of each term (over every process) and the lr.

    One optimizer step per global batch (``cfg['batch_size']``), made of ``cfg['accumulate']`` micro-steps on each
    of the processes, so the iterations, the poly schedule and any ramp are those of one process.
    ``on_epoch(row, model)`` sees each epoch's row after its checkpoint is written (``model`` None for the epochs a
    resumed run starts after).
    """
    world, accumulate, checkpoint = distributed.world(), cfg["accumulate"], Path(checkpoint)
    rt.place(model)  # before any optimizer state is loaded, so that it lands on the same device (channels_last on CUDA)
    batch_size = min(cfg["batch_size"], len(dataset))
    micro = per_process_batch(batch_size, world.size, accumulate)
    if micro != batch_size:
        log.info("%s: batch %d as %d process(es) x %d micro-step(s) of %d images", desc, batch_size, world.size, accumulate,
                 micro)
    iters_per_epoch = len(dataset) // batch_size
    max_iteration = cfg["epochs"] * iters_per_epoch
    optimizer = make_sgd(param_groups, cfg)
    train = TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(max_iteration)),
                       rt.grad_scaler())

    start_epoch, history = checkpoints.resume(checkpoint, key, train, rt, desc)
    for row in history if on_epoch else ():
        on_epoch(row, None)
    net = distributed.wrap(model, rt.device)
    step = make_step(net)
    for epoch in range(start_epoch, cfg["epochs"]):
        loader = epoch_loader(dataset, batch_size, epoch, rt.seed, rt.loader_kwargs(), world.rank, world.size, accumulate)
        batches = track(loader, f"{desc} epoch {epoch + 1}/{cfg['epochs']}", unit="step")
        try:
            sums = train_one_epoch(net, step, train, batches, epoch * iters_per_epoch, max_iteration, accumulate, rt,
                                   on_step)
        except NonFiniteLoss as e:
            raise StageError(f"{desc}: non-finite loss at step {e.iteration} (epoch {epoch + 1}): {e.values}; last good "
                             f"checkpoint: {checkpoint if checkpoint.exists() else 'none'} (lower the learning rate)") from None
        history.append({"epoch": epoch + 1, "lr": train.lr, **{k: v / iters_per_epoch for k, v in sums.items()}})
        log.info("%s: %s", desc, ", ".join(f"{k}={v:.4g}" for k, v in history[-1].items()))
        checkpoints.save(checkpoint, key, train, history, rt)
        if on_epoch:
            on_epoch(history[-1], model)
        distributed.barrier()
    return history


def train_one_epoch(net, step: Step, train: TrainState, batches, first_iteration: int, max_iteration: int,
                    accumulate: int, rt: Runtime, on_step: OnStep | None) -> dict[str, float]:
    """The optimizer steps of one epoch, each over ``accumulate`` consecutive micro-batches; the sum of every loss
    term over them (each step's mean over the processes)."""
    sums: dict[str, float] = {}
    net.train()
    for i, group in enumerate(_groups_of(batches, accumulate)):
        iteration = first_iteration + i
        values, scalars = optimizer_step(net, step, train, group, iteration, max_iteration, rt)
        if on_step:
            on_step(iteration, values, train.lr, scalars)
        # the micro-steps' gradients were scaled alike: unscaled at once; a step whose gradients overflowed fp16
        # is skipped (the same on every process: DDP has averaged them) and the scale lowered
        train.scaler.step(train.optimizer)
        train.scaler.update()
        train.scheduler.step()
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
    return sums


def optimizer_step(net, step: Step, train: TrainState, group: list[dict], iteration: int, max_iteration: int,
                   rt: Runtime) -> tuple[dict[str, float], dict[str, float]]:
    """The gradients of one global batch, its micro-batches ``group`` one after the other: the mean of each loss term
    over the processes, and the scalars the step used. A non-finite loss stops every process at the same step."""
    train.optimizer.zero_grad(set_to_none=True)
    values, scalars, accumulate = {}, {}, len(group)
    several = distributed.world().size > 1
    for j, batch in enumerate(group):
        batch = {k: v.to(rt.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        # gradients are exchanged once per optimizer step, on its last micro-step
        with net.no_sync() if several and j < accumulate - 1 else contextlib.nullcontext():
            with rt.autocast():
                terms = step(batch, iteration, max_iteration)
            train.scaler.scale(terms["total"] / accumulate).backward()
        for k, v in terms.items():
            values[k] = values.get(k, 0.0) + float(v.detach()) / accumulate
        scalars = getattr(terms, "scalars", {})  # the same on every micro-step of one iteration
    # every rank sees the same mean, so a non-finite loss stops all of them at the same step
    values = distributed.mean_over_ranks(values, rt.device)
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteLoss(iteration, values)
    return values, scalars
