"""The training loop shared by the classifier, AffinityNet and DeepLabv3+.

SGD with poly decay (power 0.9) per iteration; a checkpoint after every epoch, written
atomically and keyed by the run's settings and the contents of its inputs, from which a
killed run resumes as if uninterrupted (it holds the optimizer, schedule and loss scale, and
the random streams of every process, on the CPU and every GPU); the per-epoch mean of every
loss term in a history CSV.

Checkpoints hold tensors and plain data only and are read with ``weights_only=True``: one
that needs any other Python object is refused, never unpickled.
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from stages import StageError
from stages.core import distributed
from stages.core.runtime import Runtime, rng_state, set_rng_state
from stages.data.datasets import TrainSamples, epoch_loader
from stages.utils.io import UnreadableFile, atomic_path, load_tensors, save_model
from stages.utils.progress import track

log = logging.getLogger("stages")

# a training step: (batch, iteration, max_iteration) -> loss terms, 'total' among them
Step = Callable[[dict, int, int], dict[str, torch.Tensor]]


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
    """The optimizer named by ``cfg['optimizer']`` (default ``sgd``)."""
    return OPTIMIZERS[cfg.get("optimizer", "sgd")](param_groups, cfg)


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


def load_checkpoint(path: Path, device: torch.device) -> dict | None:
    """A checkpoint's state; None where there is none, or, with a warning, where a process cannot read it: rank 0
    sets it aside once every process has tried it, and every process starts over.

    A readable file that needs Python objects besides tensors and plain data was not written by
    :func:`fit` (its checkpoints never do): it is refused with an error rather than set aside, since
    loading it would run its code, and whoever placed it there should look at it.
    """
    state = unreadable = None
    if path.exists():
        try:
            state = load_tensors(path, "checkpoint", hint=" (delete it to train from the start)")
        except UnreadableFile as e:
            unreadable = e
    # every process learns whether any failed, which also waits until all have read the file
    if not distributed.mean_over_ranks({"unreadable": float(unreadable is not None)}, device)["unreadable"]:
        return state
    if distributed.is_main():
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        log.warning("%s; set aside as %s, training starts over", unreadable or f"{path}: unreadable on another process",
                    aside.name)
    distributed.barrier()  # set aside before any process goes on
    return None


def saved_rng(state: dict, rank: int) -> dict | None:
    """The random streams process ``rank`` saved in a checkpoint (see :func:`stages.core.runtime.rng_state`); None where it
    holds none for that rank (a run resumed on more processes: they keep their own). A checkpoint written before
    every process's streams were kept holds rank 0's CPU stream alone."""
    per_rank = state["rng"] if "rng" in state else [{"cpu": state["torch_rng"]}]
    return per_rank[rank] if rank < len(per_rank) else None


def _save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


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
    on_step: Callable[[int, int, dict[str, float], float], None] | None = None,
    on_epoch: Callable[[dict, torch.nn.Module | None], None] | None = None,
) -> list[dict]:
    """Train ``model`` for ``cfg['epochs']``; ``make_step(net)`` gives the step, ``step(batch, iteration,
    max_iteration)`` returning loss terms with 'total' computed by calling ``net`` (the model itself, or its
    DistributedDataParallel wrapper under torchrun).

    One optimizer step per global batch (``cfg['batch_size']``), made of ``cfg['accumulate']`` micro-steps on each
    of the processes, so the iterations, the poly schedule and any ramp are those of one process. Only rank 0
    writes the checkpoint; every rank resumes from it.
    Returns the history: one row per epoch with the mean of each term (over every process) and the learning rate.
    ``on_step(iteration, max_iteration, values, lr)`` sees each step's terms, ``on_epoch(row, model)`` each epoch's
    row after its checkpoint is written (``model`` None for the epochs a resumed run starts after).
    """
    world = distributed.world()
    accumulate = cfg.get("accumulate", 1)
    rt.place(model)  # before any optimizer state is loaded, so that it lands on the same device (channels_last on CUDA)
    batch_size = min(cfg["batch_size"], len(dataset))
    micro = per_process_batch(batch_size, world.size, accumulate)
    if micro != batch_size:
        log.info("%s: batch %d as %d process(es) x %d micro-step(s) of %d images", desc, batch_size, world.size, accumulate,
                 micro)
    iters_per_epoch = len(dataset) // batch_size
    max_iteration = cfg["epochs"] * iters_per_epoch
    optimizer = make_sgd(param_groups, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(max_iteration))
    scaler = rt.grad_scaler()
    start_epoch, history = 0, []
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint, rt.device)
    if state is not None:
        if isinstance(state, dict) and state.get("key") == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):  # empty where the scaler passes through (not fp16)
                scaler.load_state_dict(state["scaler"])
            start_epoch, history = state["epoch"], state["history"]
            if (rng := saved_rng(state, world.rank)) is not None:
                set_rng_state(rng)
            log.info("%s: resumed from %s after epoch %d", desc, checkpoint, start_epoch)
            for row in history if on_epoch else ():
                on_epoch(row, None)
        else:
            log.info("%s: not resuming from %s: written from other settings or inputs", desc, checkpoint)
    net = distributed.wrap(model, rt.device)
    step = make_step(net)
    for epoch in range(start_epoch, cfg["epochs"]):
        net.train()
        sums: dict[str, float] = {}
        loader = epoch_loader(dataset, batch_size, epoch, rt.seed, rt.loader_kwargs(), world.rank, world.size, accumulate)
        micro_batches = track(loader, f"{desc} epoch {epoch + 1}/{cfg['epochs']}", unit="step")
        for i, group in enumerate(_groups_of(micro_batches, accumulate)):
            iteration = epoch * iters_per_epoch + i
            optimizer.zero_grad(set_to_none=True)
            values = {}
            for j, batch in enumerate(group):
                batch = {k: v.to(rt.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                # gradients are exchanged once per optimizer step, on its last micro-step
                with net.no_sync() if world.size > 1 and j < accumulate - 1 else contextlib.nullcontext():
                    with rt.autocast():
                        terms = step(batch, iteration, max_iteration)
                    scaler.scale(terms["total"] / accumulate).backward()
                for k, v in terms.items():
                    values[k] = values.get(k, 0.0) + float(v.detach()) / accumulate
            # every rank sees the same mean, so a non-finite loss stops all of them at the same step
            values = distributed.mean_over_ranks(values, rt.device)
            if not all(math.isfinite(v) for v in values.values()):
                raise StageError(
                    f"{desc}: non-finite loss at step {iteration} (epoch {epoch + 1}): {values}; "
                    f"last good checkpoint: {checkpoint if checkpoint.exists() else 'none'} (lower the learning rate)"
                )
            if on_step:
                on_step(iteration, max_iteration, values, optimizer.param_groups[0]["lr"])
            # the micro-steps' gradients were scaled alike: unscaled at once; a step whose gradients overflowed fp16
            # is skipped (the same on every process: DDP has averaged them) and the scale lowered
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **{k: v / iters_per_epoch for k, v in sums.items()}}
        history.append(row)
        log.info("%s: %s", desc, ", ".join(f"{k}={v:.4g}" for k, v in row.items()))
        rng = distributed.all_gather(rng_state(rt.cuda))  # every process's: a resumed one draws on as if uninterrupted
        if world.main:
            _save_checkpoint(checkpoint, {
                "key": key, "epoch": epoch + 1, "history": history, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": rng,
            })
        if on_epoch:
            on_epoch(row, model)
        distributed.barrier()
    return history


def save_trained(out: Path, model: torch.nn.Module, meta: dict, history: list[dict], checkpoint: Path) -> None:
    """The finished model (state_dict + sidecar), its history.csv beside it; then the checkpoint goes.
    Rank 0 writes them; the other processes wait until it has."""
    if not distributed.is_main():
        distributed.barrier()
        return
    save_model(out, model.state_dict(), meta)
    write_history(out.parent / "history.csv", history)
    checkpoint.unlink(missing_ok=True)
    distributed.barrier()


def write_history(path: Path, history: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(history)
