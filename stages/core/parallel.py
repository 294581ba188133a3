"""Per-image CPU work (dense CRF) spread over a process pool."""
from __future__ import annotations

import functools
import multiprocessing as mp
from pathlib import Path

import numpy as np

from stages.core.staging import StagedOutputs
from stages.data.voc import read_image
from stages.utils.io import load_npz, save_label_png
from stages.utils.progress import track


def imap(fn, items, processes: int):
    """``map(fn, items)`` in order, over ``processes`` forked workers when more than one.

    ``items`` may be a generator (e.g. GPU inference feeding CRF workers): the pool
    consumes it from a helper thread of this process while the workers run.
    """
    if processes <= 1:
        yield from map(fn, items)
        return
    chunksize = max(1, min(16, len(items) // (4 * processes))) if hasattr(items, "__len__") else 1
    # fork: workers inherit the loaded modules; they run numpy/pydensecrf only, never torch
    with mp.get_context("fork").Pool(processes) as pool:
        yield from pool.imap(fn, items, chunksize=chunksize)


def _label_one(job, label_fn, array: str, cfg: dict) -> None:
    image_path, max_side, maps_path, out_path = job
    d = load_npz(maps_path)
    save_label_png(out_path, label_fn(read_image(image_path, max_side), d[array].astype(np.float32), d["keys"], cfg))


def label_images(desc: str, label_fn, index, ids, maps: Path, array: str, cfg: dict, out: Path, processes: int) -> None:
    """For every image, ``label_fn(image, maps/<id>.npz[array], keys, cfg)`` -> ``out/<id>.png``, over the pool, staged."""
    staged = StagedOutputs(out, ".png", cfg, ids, sources={i: [index.image_path(i), maps / f"{i}.npz"] for i in ids})
    jobs = [(index.image_path(i), index.max_side, maps / f"{i}.npz", staged.path(i)) for i in staged.todo(ids)]
    work = functools.partial(_label_one, label_fn=label_fn, array=array, cfg=cfg)
    for _ in track(imap(work, jobs, processes), desc, total=len(jobs)):
        pass
    staged.commit()
