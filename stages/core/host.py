"""What a stage's process learns from its host and environment, without importing torch: whether the CUDA driver is
there and which devices it shows, the GPUs stages.core.launch pinned the job to, and the torchrun world it is part
of. A leaf: the launcher, which must start fast on hosts without GPUs, and the runtime share it."""
from __future__ import annotations

import ctypes
import os
import uuid
from dataclasses import dataclass

# set in the environment of a stage pinned to GPUs on a host with the CUDA driver: the stage must then find CUDA
# (stages/core/runtime.py), rather than compute on the CPU
PINNED = "STAGES_PINNED_GPUS"


def cuda_driver() -> bool:
    """Whether the host has the CUDA driver library that torch.cuda needs to see any device."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def visible_uuids() -> list[str] | None:
    """The UUIDs of the devices the CUDA driver shows this process (CUDA_VISIBLE_DEVICES respected, in its order),
    through the driver API: no torch import. None without the driver library, [] where the driver fails."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int()
    if lib.cuInit(0) or lib.cuDeviceGetCount(ctypes.byref(count)):
        return []
    # _v2 (drivers since CUDA 11.4) gives a MIG instance its own UUID, the first version its GPU's
    get_uuid = getattr(lib, "cuDeviceGetUuid_v2", None) or lib.cuDeviceGetUuid
    uuids = []
    for i in range(count.value):
        device, raw = ctypes.c_int(), (ctypes.c_ubyte * 16)()
        if lib.cuDeviceGet(ctypes.byref(device), i) or get_uuid(raw, device):
            return []
        uuids.append(str(uuid.UUID(bytes=bytes(raw))))
    return uuids


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the artifacts (rank 0)."""
        return self.rank == 0


def world_from_env(environ=os.environ) -> World:
    """The world torchrun describes in ``environ``; one process without it."""
    return World(int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1)), int(environ.get("LOCAL_RANK", 0)))
