"""The scaffold of the three trainings (train_classifier, train_affinity, train_segmentation).

Each trainer declares what it trains, a :class:`Training`: the model, its parameter groups, the training samples,
the step, what its sidecar and its checkpoint key add. :func:`train` does the rest, the same for all three: the
runtime and the split, the process group under torchrun, the checkpoint key (settings and input contents), the
loop (stages/core/engine.py), TensorBoard event files, and the model, sidecar and history written at the end
(stages/core/checkpoint.py, which also saves and resumes the loop). What training logs is one edit here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from stages.core import distributed
from stages.core.checkpoint import save_trained
from stages.core.engine import Step, fit
from stages.core.job import Job, split_index
from stages.core.runtime import job_runtime
from stages.core.staging import inputs_key, settings_key
from stages.data.datasets import TrainSamples

# images scored after each epoch for TensorBoard, the first of the training split that have masks: a view of the
# training, never used to choose anything
EVAL_IMAGES = 64


@dataclass(frozen=True)
class Recipe:
    """How a stage trains its model from its config section (the model, its parameter groups, its step): what
    the stage and bench/ both build from."""

    build: Callable[[], torch.nn.Module]
    param_groups: Callable[[torch.nn.Module], list[dict]]
    make_step: Callable[[torch.nn.Module], Step]


@dataclass
class Training:
    model: torch.nn.Module
    param_groups: list[dict]
    data: TrainSamples
    make_step: Callable[[torch.nn.Module], Step]  # (the model, or its DistributedDataParallel wrapper) -> step
    meta: dict = field(default_factory=dict)  # the sidecar's entries besides stage, classes, config, seed, precision
    key: tuple = ()  # what the result depends on besides the settings and the files of ``data`` (a model's bytes)
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None  # per-epoch scores, where masks exist


class TensorBoard:
    """Event files under ``folder`` (rank 0 only): every loss term, the lr and the scalars the step used (the
    classifier's alpha) per step; the epoch means and scores per epoch. A resumed run logs the epochs it resumed
    after from the checkpoint's history."""

    def __init__(self, folder: Path, training: Training):
        self.training = training
        self.writer = None
        if distributed.is_main():
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only where training runs

            Path(folder).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(folder))

    def step(self, iteration: int, values: dict[str, float], lr: float, scalars: dict[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in {**{f"loss/{k}": v for k, v in values.items()}, "lr": lr, **scalars}.items():
            self.writer.add_scalar(name, value, iteration)

    def epoch(self, row: dict, model: torch.nn.Module | None) -> None:
        if self.writer is None:
            return
        epoch = row["epoch"]
        for k, v in row.items():
            if k not in ("epoch", "lr"):
                self.writer.add_scalar(f"epoch/{k}", v, epoch)
        if model is not None and self.training.evaluate is not None:
            was_training = model.training
            for k, v in self.training.evaluate(model.eval()).items():
                self.writer.add_scalar(f"eval/{k}", v, epoch)
            model.train(was_training)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(job: Job, build: Callable[..., Training], desc: str | None = None, backend: str | None = None) -> list[dict]:
    """Run the training ``build(job, index, ids, rt)`` declares, on the job's split; write the model (state_dict +
    sidecar) and history.csv beside it. Returns the history. ``backend``: the process group's under torchrun, where
    not the device's own (see :func:`stages.core.distributed.process_group`)."""
    rt = job_runtime(job, autotune=True)  # the training crops repeat one shape
    index, ids = split_index(job)
    cfg = job.params.cfg
    with distributed.process_group(rt.device, rt.seed, backend=backend):
        training = build(job, index, ids, rt)
        data = training.data
        # the settings and the inputs' contents (labels, the images' and masks' sizes and mtimes, a model's bytes):
        # a checkpoint written from anything else is not resumed
        key = settings_key(cfg, rt.seed, rt.precision, ids, data.labels,
                           inputs_key(*data.image_paths, *(data.mask_paths or [])), *training.key)
        board = TensorBoard(job.output.tensorboard, training)
        try:
            history = fit(training.model, training.param_groups, data, training.make_step, cfg, rt,
                          Path(job.params.checkpoint), key, desc or job.rule, on_step=board.step, on_epoch=board.epoch)
        finally:
            board.close()
        meta = {"stage": job.rule, "classes": index.classes, "config": cfg, "seed": rt.seed, "precision": rt.precision,
                **training.meta}
        save_trained(job.output.model, training.model, meta, history, Path(job.params.checkpoint))
    return history


def scored_ids(index, ids: list[str]) -> list[str]:
    """The first :data:`EVAL_IMAGES` of ``ids`` that have a mask: what a trainer scores after each epoch."""
    return [i for i in ids if index.mask_path(i).is_file()][:EVAL_IMAGES]
