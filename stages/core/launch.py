"""Run a rule's stage on the GPUs of its job: ``python -m stages.core.launch <rule> JOB`` (every rule's shell line).

Snakemake's ``--resources gpu=N`` bounds how many GPUs the running jobs hold together, but does not say which:
every job would open device 0. Here a job takes the N slots its ``resources.gpu`` asks for in the host's GPU pool,
each guarded by an exclusive lock on a file (``fcntl.flock``, released by the kernel when the job ends, however it
ends), and runs ``stages.<rule>`` with ``CUDA_VISIBLE_DEVICES`` naming those devices only. The pool is
``CUDA_VISIBLE_DEVICES`` where it is set (a device listed twice gives two slots on it: two jobs may share it) and
every device of the host otherwise. Jobs of one SLURM allocation share the locks; separate allocations have their
own devices and locks. A job that asks for no GPU runs its stage directly.

A training stage given more than one device runs under ``torchrun``, one process per device
(DistributedDataParallel, see stages/core/distributed.py); the per-image stages stay one process.
"""
from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from stages import StageError
from stages.core.job import LOG_FORMAT, Job

log = logging.getLogger("stages")

# how often a job that finds every slot taken looks again (a job started without --resources gpu=N)
POLL_SECONDS = 1.0

# the stages that train with DistributedDataParallel when they have several devices
DISTRIBUTED_STAGES = {"train_classifier", "train_affinity", "train_segmentation"}


def gpu_pool(environ=os.environ) -> list[str]:
    """The devices jobs on this host may take, one entry per slot."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if not cuda_driver():  # torch would find no device either, after seconds of importing it
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def cuda_driver() -> bool:
    """Whether the host has the CUDA driver library that torch.cuda needs to see any device."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def lock_dir(environ=os.environ) -> Path:
    """Where the slot locks of this host (and SLURM allocation) live."""
    job = environ.get("SLURM_JOB_ID")
    return Path(tempfile.gettempdir()) / f"gpu-slots-{os.getuid()}{f'-{job}' if job else ''}"


def try_acquire(pool: list[str], n: int, folder: Path) -> tuple[list[str], list[int]] | None:
    """``n`` free slots' devices and their locked file descriptors (held until closed), or None if fewer are free."""
    folder.mkdir(parents=True, exist_ok=True)
    devices, fds = [], []
    for slot, device in enumerate(pool):
        fd = os.open(folder / f"slot{slot}-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        devices.append(device)
        fds.append(fd)
        if len(devices) == n:
            return devices, fds
    for fd in fds:
        os.close(fd)
    return None


def acquire(pool: list[str], n: int, folder: Path, poll: float = POLL_SECONDS) -> tuple[list[str], list[int]]:
    """``n`` slots of ``pool``, waiting until other jobs free them."""
    if n > len(pool):
        raise StageError(f"--gpus {n}: this host has {len(pool)} GPU slot(s) ({','.join(pool) or 'none'})")
    while (got := try_acquire(pool, n, folder)) is None:
        time.sleep(poll)
    return got


def pinned_env(n: int, environ=os.environ, folder: Path | None = None) -> tuple[dict, list[int]]:
    """The environment of a stage that uses ``n`` GPUs, and the lock descriptors to hold while it runs."""
    pool = gpu_pool(environ) if n > 0 else []
    if not pool:  # a CPU job, or a host without GPUs (device: auto computes on the CPU)
        return dict(environ), []
    devices, fds = acquire(pool, n, folder or lock_dir(environ))
    return {**environ, "CUDA_VISIBLE_DEVICES": ",".join(dict.fromkeys(devices))}, fds


def processes(env: dict) -> int:
    """One process per distinct device the job sees (a device listed twice is one: NCCL runs one rank per device)."""
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    return max(len(set(visible)), 1)


def stage_command(rule: str, job: str, nproc: int, python: str = sys.executable) -> list[str]:
    """The stage's command line: torchrun with ``nproc`` processes for a training stage on several devices,
    the stage alone otherwise."""
    if nproc > 1 and rule in DISTRIBUTED_STAGES:
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                "-m", f"stages.{rule}", job]
    return [python, "-m", f"stages.{rule}", job]


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(f"{__doc__.splitlines()[0]}\nusage: python -m stages.core.launch RULE JOB", file=sys.stderr)
        sys.exit(2)
    rule, text = argv
    try:
        job = Job.from_json(text)
        env, fds = pinned_env(int(job.resources.get("gpu", 0)))
    except (StageError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if fds:
        log.info("launch: %s on CUDA_VISIBLE_DEVICES=%s", rule, env["CUDA_VISIBLE_DEVICES"])
    for fd in fds:  # the stage holds the locks: they are released when it ends
        os.set_inheritable(fd, True)
    job = Job(rule, job.input, job.output, job.params, job.wildcards, job.threads, job.resources)
    command = stage_command(rule, job.to_json(), processes(env) if fds else 1)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
