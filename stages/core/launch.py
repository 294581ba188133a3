"""Run a rule's stage on the GPUs of its job: ``python -m stages.core.launch JOB`` (every rule's shell line).

Snakemake's ``--resources gpu=N`` bounds how many GPUs the running jobs hold together, but does not say which:
every job would open device 0. Here a job takes the N slots its ``resources.gpu`` asks for in the host's GPU pool,
each guarded by an exclusive lock on a file (``fcntl.flock``, released by the kernel when the job ends, however it
ends), and runs ``stages.<rule>`` with ``CUDA_VISIBLE_DEVICES`` naming those devices only. The pool is
``CUDA_VISIBLE_DEVICES`` where it is set (a device listed twice gives two slots on it: two jobs may share it) and
every device of the host otherwise; a job of several slots takes them on distinct devices first. A lock is named
after its physical GPU (the UUID the CUDA driver gives it) and lives in one folder for the whole host: jobs of
other workflows, users or SLURM allocations, whatever their ``CUDA_VISIBLE_DEVICES``, take the same GPU's locks.
A job that asks for no GPU runs its stage directly.

A training stage given more than one device runs under ``torchrun``, one process per device
(DistributedDataParallel, see stages/core/distributed.py); the per-image stages stay one process.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from stages import StageError
from stages.core.host import PINNED, cuda_driver, visible_uuids
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
    return [str(i) for i in range(len(visible_uuids() or []))]


def device_uuids(entries: list[str], environ=os.environ) -> dict[str, str] | None:
    """The UUID of each of ``entries`` (CUDA_VISIBLE_DEVICES entries: indices, UUIDs or MIG ids), asked of the driver in
    a process that sees exactly those devices; None where the host has no CUDA driver, {} where it cannot tell."""
    if not cuda_driver():
        return None
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, environ.get("PYTHONPATH")) if p)
    env = {**environ, "CUDA_VISIBLE_DEVICES": ",".join(entries), "PYTHONPATH": path}
    try:
        proc = subprocess.run([sys.executable, "-c", "from stages.core.host import visible_uuids; print(*visible_uuids() or [])"],
                              env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return {}
    found = proc.stdout.split()
    return dict(zip(entries, found)) if proc.returncode == 0 and len(found) == len(entries) else {}


class Slot(NamedTuple):
    device: str  # the entry of the pool: what CUDA_VISIBLE_DEVICES names it
    gpu: str  # the physical device: its UUID, or the entry where the driver cannot tell
    lock: str  # the lock file's name


def slots(pool: list[str], uuids: dict[str, str]) -> list[Slot]:
    """The slots of ``pool``: a device listed k times has k, each with its own lock, named after the physical device
    and the slot's rank among its slots: jobs whose pools name one GPU by another index (another workflow's
    CUDA_VISIBLE_DEVICES, another SLURM allocation) or by its UUID take the same locks."""
    seen: Counter = Counter()
    out = []
    for device in pool:
        gpu = uuids.get(device, device)
        out.append(Slot(device, gpu, f"{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}-{seen[gpu]}.lock"))
        seen[gpu] += 1
    return out


def lock_dir() -> Path:
    """The folder of every slot lock of the host, shared by its users and SLURM allocations. Not under $TMPDIR, which
    SLURM and users point at folders of their own."""
    return Path("/tmp/gpu-slots")


def shared_folder(folder: Path) -> Path:
    """``folder``, created sticky and writable by every user (whatever the umask); its creator alone may set that."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        folder.chmod(0o1777)
    return folder


def lock(path: Path) -> int | None:
    """A descriptor holding an exclusive lock on ``path``, or None where another job holds it. The file is made
    readable and writable by every user, whatever the umask, so that anyone's job can lock it later."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except PermissionError:  # another user's file before its creator has opened it up: busy for now
        return None
    with contextlib.suppress(PermissionError):  # only the file's owner may; it did when it created it
        os.fchmod(fd, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def try_acquire(pool: list[Slot], n: int, folder: Path) -> tuple[list[Slot], list[int]] | None:
    """``n`` free slots and their locked file descriptors (held until closed), or None if fewer are free.

    Distinct devices first: a slot of a device the job already holds is taken only once it holds as many devices
    as it asks for or as the pool has; a job that cannot get that many waits, rather than run a multi-GPU training
    as one process on one device."""
    shared_folder(folder)
    held: dict[Slot, int] = {}
    for distinct in (True, False):
        for slot in pool:
            if len(held) == n or slot in held or (distinct and slot.gpu in {s.gpu for s in held}):
                continue
            if (fd := lock(folder / slot.lock)) is not None:
                held[slot] = fd
    if len(held) == n and len({s.gpu for s in held}) == min(n, len({s.gpu for s in pool})):
        return list(held), list(held.values())
    for fd in held.values():
        os.close(fd)
    return None


def acquire(pool: list[Slot], n: int, folder: Path, poll: float = POLL_SECONDS) -> tuple[list[Slot], list[int]]:
    """``n`` slots of ``pool``, waiting until other jobs free them."""
    if n > len(pool):
        names = ",".join(s.device for s in pool) or "none"
        raise StageError(f"--gpus {n}: this host has {len(pool)} GPU slot(s) ({names})")
    while (got := try_acquire(pool, n, folder)) is None:
        time.sleep(poll)
    return got


def pinned_env(n: int, environ=os.environ, folder: Path | None = None, uuids=device_uuids) -> tuple[dict, list[int]]:
    """The environment of a stage that uses ``n`` GPUs, and the lock descriptors to hold while it runs. ``uuids(entries,
    environ)`` names the physical devices (see :func:`device_uuids`; None: the host has no CUDA driver)."""
    pool = gpu_pool(environ) if n > 0 else []
    if not pool:  # a CPU job, or a host without GPUs (device: auto computes on the CPU)
        return dict(environ), []
    found = uuids(list(dict.fromkeys(pool)), environ)
    held, fds = acquire(slots(pool, found or {}), n, folder or lock_dir())
    devices: dict[str, str] = {}
    for slot in held:  # each GPU once (one process each), as the job's first slot on it names it
        devices.setdefault(slot.gpu, slot.device)
    visible = ",".join(devices.values())
    # a host without the driver (a pool named in CUDA_VISIBLE_DEVICES on a CPU machine) computes on the CPU
    return {**environ, "CUDA_VISIBLE_DEVICES": visible, **({PINNED: visible} if found is not None else {})}, fds


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
    if len(argv) != 1:
        print(f"{__doc__.splitlines()[0]}\nusage: python -m stages.core.launch JOB", file=sys.stderr)
        sys.exit(2)
    try:
        job = Job.from_json(argv[0])
        if not job.rule:
            raise ValueError("the job names no rule")
        env, fds = pinned_env(int(job.resources.get("gpu", 0)))
    except (StageError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    rule = job.rule
    if fds:
        log.info("launch: %s on CUDA_VISIBLE_DEVICES=%s", rule, env["CUDA_VISIBLE_DEVICES"])
    for fd in fds:  # the stage holds the locks: they are released when it ends
        os.set_inheritable(fd, True)
    command = stage_command(rule, job.to_json(), processes(env) if fds else 1)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
