"""Time and peak memory of one case, each version in its own fresh worker process.

A fresh process per measurement keeps one version's freed-but-resident heap from hiding the
other's peak. CPU peak: the resident-set high-water mark of the worker (reset before the run)
and the sampled resident sets of the worker and its children (the CRF pool), above the
worker's resident set before the run, all counting data pages only (resident set less file-backed and
shared pages: library code paged in on first use is not the stage's memory). CUDA peak: torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
import torch

from bench.report import Row
from bench.stages import CASES, Settings

MB = 2**20


def status(*fields: str) -> dict[str, int] | None:
    """Fields of /proc/self/status in bytes (Linux), or None."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines if line.split(":")[0] in fields}
    return values if len(values) == len(fields) else None


def anon_high_water() -> int | None:
    """Peak resident data of this process: VmHWM less the file-backed and shared pages now resident.

    Library code paged in on first use is file-backed; leaving it out keeps it off the measured peak."""
    s = status("VmHWM", "RssFile", "RssShmem")
    return s and s["VmHWM"] - s["RssFile"] - s["RssShmem"]


def reset_high_water() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS
    except OSError:
        pass  # not Linux or not allowed: the sampled peak still holds


def anon_rss(proc: psutil.Process) -> int:
    m = proc.memory_info()
    return m.rss - m.shared


class TreePeak:
    """The largest resident data of this process plus what its children added, sampled every ``interval`` s.

    A forked child starts with its parent's resident data mapped: only what it holds beyond the
    parent's, as of the sample that first sees it, counts. (Not the child's own first sample: a
    sparse sampler may first see a child mid-job.) Sampling is sparse because on a 2-core machine
    a busy sampler takes CPU from the workers it measures.
    """

    def __init__(self, interval: float = 0.05):
        # children_peak: the most the children added at once, whatever the parent itself frees meanwhile
        self.interval, self.peak, self.children_peak, self._stop = interval, 0, 0, threading.Event()
        self._first: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> tuple[int, int]:
        """(this process's resident data plus what its children added, what the children added)."""
        proc = psutil.Process()
        own = total = anon_rss(proc)
        try:
            children = proc.children(recursive=True)
        except psutil.Error:  # a process of the machine exited while its table was read: the next sample reads it
            return total, 0
        for child in children:
            try:
                rss = anon_rss(child)
            except psutil.Error:
                continue  # a worker that has just exited
            total += max(0, rss - self._first.setdefault(child.pid, own))
        return total, total - own

    def sample(self) -> None:
        """One sample now (the sampler thread takes one every ``interval`` s)."""
        total, children = self._rss()
        self.peak, self.children_peak = max(self.peak, total), max(self.children_peak, children)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss()[0])


def run_case(name: str, version: str, settings: Settings) -> dict:
    """In the worker: set up, then run one version of a case once, timed."""
    torch.set_num_threads(settings.threads)
    case = CASES[name]
    state = case.setup(settings)
    fn = getattr(case, version)
    cuda = settings.device == "cuda" and not case.cpu_only
    if cuda:
        fn(state)  # cuDNN autotuning and lazy initialisation stay out of the timing
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = anon_rss(psutil.Process())
    reset_high_water()
    with TreePeak() as tree:
        start = time.perf_counter()
        output = fn(state)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = max(tree.peak, anon_high_water() or 0) - before
    return {"seconds": seconds, "peak_mb": peak / MB, "output": output, "flops": state.get("flops")}


def measure(name: str, version: str, settings: Settings) -> dict:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(run_case, name, version, settings).result()


def measure_cases(settings: Settings, names: list[str]) -> list[Row]:
    """Each case, as the project runs it and (where it has one) as the naive reference, with their deviation."""
    rows = []
    for name in names:
        case = CASES[name]
        print(f"{name}: project ...", flush=True)
        project = measure(name, "project", settings)
        reference = deviation = None
        if case.naive:
            print(f"{name}: naive ...", flush=True)
            reference = measure(name, "naive", settings)
            deviation = case.compare(project["output"], reference["output"])
        rows.append(Row(name, case.size(settings), case.count(settings), project, reference, deviation,
                        case.tolerance(settings) if case.tolerance else None))
    return rows
