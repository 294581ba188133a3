"""Where and how a stage computes: device, precision, threads, seeds."""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from stages import StageError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    seed: int = 0
    num_workers: int = 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """bf16 autocast on CUDA; full precision on the CPU (deterministic and fast enough there)."""
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loader_kwargs(self) -> dict:
        kw = {"num_workers": self.num_workers, "pin_memory": self.cuda}
        if self.num_workers > 0:
            kw["persistent_workers"] = False
        return kw


def make_runtime(device: str = "auto", seed: int = 0, num_workers: int = 0, threads: int | None = None) -> Runtime:
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif device == "cuda":
        if not torch.cuda.is_available():
            raise StageError("device: cuda was asked for but torch finds no CUDA device; set device: auto or cpu")
        dev = torch.device("cuda")
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise StageError(f"device: unknown value {device!r} (expected auto, cpu or cuda)")
    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Runtime(device=dev, seed=seed, num_workers=num_workers)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
