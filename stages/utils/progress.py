"""Progress for long loops: a tqdm bar on a terminal, plain lines in a rule's log file."""
from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("stages")


def track(iterable, desc: str, total: int | None = None, unit: str = "img"):
    """Iterate with progress; at the end log the rate (``<desc>: N <unit> in S s (R <unit>/s)``)."""
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    interactive = sys.stderr.isatty()
    bar = tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, disable=not interactive, dynamic_ncols=True)
    start = last = time.perf_counter()
    n = 0
    for item in bar:
        yield item
        n += 1
        now = time.perf_counter()
        if not interactive and (now - last > 10 or n == total):
            last = now
            log.info("%s: %d/%s %s (%.2f %s/s)", desc, n, total if total is not None else "?", unit, n / max(now - start, 1e-9), unit)
    elapsed = time.perf_counter() - start
    log.info("%s: %d %s in %.1f s (%.2f %s/s)", desc, n, unit, elapsed, n / max(elapsed, 1e-9), unit)
