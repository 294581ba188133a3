"""What a training saves and resumes from: a checkpoint after every epoch, and the finished model with its history.

A checkpoint is written atomically by rank 0 and keyed by the run's settings and the contents of its inputs; it
holds the model, the optimizer, the schedule, the loss scale and the random streams of every process (on the CPU
and every GPU), so that a killed run resumes as if uninterrupted. It holds tensors and plain data only and is read
with ``weights_only=True``: one that needs any other Python object is refused, never unpickled.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.core import distributed
from stages.core.runtime import Runtime, rng_state, set_rng_state
from stages.utils.io import UnreadableFile, atomic_path, load_tensors, save_model

log = logging.getLogger("stages")


@dataclass
class TrainState:
    """What an optimizer step changes, all of it saved in a checkpoint: the weights, the optimizer, its poly
    schedule and the fp16 loss scale."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def load_checkpoint(path: Path, device: torch.device) -> dict | None:
    """A checkpoint's state; None where there is none, or, with a warning, where a process cannot read it: rank 0
    sets it aside once every process has tried it, and every process starts over.

    A readable file that needs Python objects besides tensors and plain data was not written by :func:`save` (its
    checkpoints never do): it is refused with an error rather than set aside, since loading it would run its code,
    and whoever placed it there should look at it.
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


def resume(path: Path, key: str, train: TrainState, rt: Runtime, desc: str) -> tuple[int, list[dict]]:
    """``train`` and this process's random streams as the checkpoint at ``path`` left them, where it was written
    with ``key``; the epochs done and their history ((0, []) where there is nothing to resume)."""
    state = load_checkpoint(path, rt.device)
    if state is None:
        return 0, []
    if not (isinstance(state, dict) and state.get("key") == key):
        log.info("%s: not resuming from %s: written from other settings or inputs", desc, path)
        return 0, []
    train.model.load_state_dict(state["model"])
    train.optimizer.load_state_dict(state["optimizer"])
    train.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):  # empty where the scaler passes through (not fp16)
        train.scaler.load_state_dict(state["scaler"])
    if (rng := saved_rng(state, distributed.world().rank)) is not None:
        set_rng_state(rng)
    log.info("%s: resumed from %s after epoch %d", desc, path, state["epoch"])
    return state["epoch"], state["history"]


def save(path: Path, key: str, train: TrainState, history: list[dict], rt: Runtime) -> None:
    """The checkpoint after epoch ``len(history)``, written by rank 0 with every process's random streams: a resumed
    run draws on as if uninterrupted."""
    rng = distributed.all_gather(rng_state(rt.cuda))
    if not distributed.is_main():
        return
    buf = io.BytesIO()
    torch.save({"key": key, "epoch": len(history), "history": history, "model": train.model.state_dict(),
                "optimizer": train.optimizer.state_dict(), "scheduler": train.scheduler.state_dict(),
                "scaler": train.scaler.state_dict(), "rng": rng}, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


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
