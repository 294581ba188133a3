"""Per-image CPU work (dense CRF) spread over a process pool."""
from __future__ import annotations

import multiprocessing as mp


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
