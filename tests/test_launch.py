"""GPU slots: each job runs on its own devices, never two on one unless the pool lists a device twice. The CUDA driver
that names the physical GPUs is stood in for by fake device lists."""
import ctypes
import os
import stat
import subprocess
import sys
import uuid

import pytest

import stages.core.launch as launch
from stages import StageError
from stages.core.launch import (
    PINNED,
    acquire,
    gpu_pool,
    lock_dir,
    pinned_env,
    processes,
    slots,
    stage_command,
    try_acquire,
)


def no_driver(entries, environ):
    return None


def driver(**uuids):
    """The driver's answer to ``device_uuids``: each pool entry's UUID."""
    return lambda entries, environ: {e: uuids[e] for e in entries if e in uuids}


def test_the_pool_is_cuda_visible_devices_with_a_slot_per_entry():
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": "0,0,1"}) == ["0", "0", "1"]  # two jobs may share device 0
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": ""}) == [] and gpu_pool({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_a_host_without_the_cuda_driver_has_no_pool_and_never_imports_torch():
    """Every GPU job on a CPU host goes through launch: torch's seconds of import are saved there."""
    probe = ("import sys; import stages.core.launch as launch; launch.visible_uuids = lambda: None; "
             "print(launch.gpu_pool({}), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "False"]
    import torch

    # where the driver is, the pool is every device torch sees
    assert gpu_pool({}) == ([str(i) for i in range(torch.cuda.device_count())] if launch.cuda_driver() else [])


def devices(got):
    """The devices of try_acquire's slots (None where it got none)."""
    return got and [slot.device for slot in got[0]]


def test_jobs_take_free_slots_and_a_finished_job_frees_its_own(tmp_path):
    pool = slots(["0", "1", "2"], {})
    first, fds_first = try_acquire(pool, 1, tmp_path)
    second, fds_second = try_acquire(pool, 2, tmp_path)
    assert devices((first, fds_first)) == ["0"] and devices((second, fds_second)) == ["1", "2"]
    assert try_acquire(pool, 1, tmp_path) is None  # every slot is held
    for fd in fds_second:
        os.close(fd)
    assert devices(try_acquire(pool, 2, tmp_path)) == ["1", "2"]


def test_a_lock_is_released_when_its_process_ends_however_it_ends(tmp_path):
    held = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                             "from stages.core.launch import slots, try_acquire; "
                             f"try_acquire(slots(['0'], {{}}), 1, Path({str(tmp_path)!r})); print('held', flush=True); "
                             "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert held.stdout.readline() == "held\n"
    assert try_acquire(slots(["0"], {}), 1, tmp_path) is None
    held.kill()
    held.wait()
    assert devices(try_acquire(slots(["0"], {}), 1, tmp_path)) == ["0"]


def test_more_gpus_than_the_host_has_is_one_clear_error(tmp_path):
    with pytest.raises(StageError, match=r"--gpus 3: this host has 2 GPU slot\(s\) \(0,1\)"):
        acquire(slots(["0", "1"], {}), 3, tmp_path)


def test_a_pinned_job_sees_only_its_devices_and_a_cpu_job_is_left_alone(tmp_path):
    env, fds = pinned_env(2, {"CUDA_VISIBLE_DEVICES": "4,5,6", "HOME": "/h"}, tmp_path, no_driver)
    assert env == {"CUDA_VISIBLE_DEVICES": "4,5", "HOME": "/h"} and len(fds) == 2
    assert pinned_env(0, {"CUDA_VISIBLE_DEVICES": "4,5,6"}, tmp_path, no_driver) == ({"CUDA_VISIBLE_DEVICES": "4,5,6"}, [])


def test_a_job_pinned_on_a_host_with_the_driver_is_marked_so_that_it_must_find_cuda(tmp_path):
    """Without the driver (the pool above, on a CPU machine) the job computes on the CPU; with it, the stage stops
    where its torch finds no GPU (stages/core/runtime.py)."""
    env, _ = pinned_env(1, {"CUDA_VISIBLE_DEVICES": "4,5"}, tmp_path, driver(**{"4": "uuid-a"}))
    assert env == {"CUDA_VISIBLE_DEVICES": "4", PINNED: "4"}


def test_a_job_of_two_gpus_takes_two_devices_of_a_doubled_pool(tmp_path):
    """With 0,0,1,1 (two jobs may share each device) a 2-GPU training must run as two processes on two devices."""
    host = {"0": "uuid-a", "1": "uuid-b"}
    env, _ = pinned_env(2, {"CUDA_VISIBLE_DEVICES": "0,0,1,1"}, tmp_path, driver(**host))
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and processes(env) == 2
    pool = slots(["0", "0", "1", "1"], host)
    one_each, _ = try_acquire(pool, 2, tmp_path)  # the other slot of each device
    assert [s.device for s in one_each] == ["0", "1"]
    assert try_acquire(pool, 1, tmp_path) is None


def test_a_job_waits_for_distinct_devices_rather_than_doubling_up(tmp_path):
    pool = slots(["0", "0", "1", "1"], {})
    other = [try_acquire([slot], 1, tmp_path) for slot in pool if slot.device == "1"]  # device 1 busy
    assert all(other)
    assert try_acquire(pool, 2, tmp_path) is None  # two slots of device 0 are free, one device is not two
    assert devices(try_acquire(pool, 1, tmp_path)) == ["0"]


def test_jobs_that_name_one_gpu_differently_share_its_locks(tmp_path):
    """Two workflows (or users, or SLURM allocations) whose CUDA_VISIBLE_DEVICES name the same physical GPU by another
    index, or by its UUID, take the same lock: the lock is the GPU's UUID and the slot's rank on it."""
    host = {"0": "uuid-a", "1": "uuid-b", "GPU-b": "uuid-b"}
    env, _ = pinned_env(2, {"CUDA_VISIBLE_DEVICES": "0,1"}, tmp_path, driver(**host))
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    for other in ("1", "GPU-b"):  # the second GPU, as another job's pool names it
        assert try_acquire(slots([other], host), 1, tmp_path) is None
    assert [s.lock for s in slots(["1", "1", "GPU-b"], host)] == ["uuid-b-0.lock", "uuid-b-1.lock", "uuid-b-2.lock"]
    # where the driver cannot tell, the pool's own names (before narrowing) are the locks
    assert [s.lock for s in slots(["2", "2"], {})] == ["2-0.lock", "2-1.lock"]


def test_the_lock_folder_and_files_are_every_users(tmp_path):
    """One folder for the whole host: every user's jobs must be able to create and lock its files, whatever the umask."""
    assert lock_dir() == launch.Path("/tmp/gpu-slots")  # not $TMPDIR, which SLURM points at a folder of the job's
    old = os.umask(0o077)
    try:
        try_acquire(slots(["0"], {"0": "uuid-a"}), 1, tmp_path / "slots")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "slots").stat().st_mode) == 0o1777
    assert stat.S_IMODE((tmp_path / "slots" / "uuid-a-0.lock").stat().st_mode) == 0o666


class FakeDriver:
    """libcuda's device calls, over two devices: what ctypes hands them is written as the driver writes it."""

    UUIDS = [uuid.UUID(int=1), uuid.UUID(int=2)]

    def cuInit(self, flags):
        return 0

    def cuDeviceGetCount(self, count):
        count._obj.value = len(self.UUIDS)
        return 0

    def cuDeviceGet(self, device, ordinal):
        device._obj.value = ordinal
        return 0

    def cuDeviceGetUuid_v2(self, raw, device):
        ctypes.memmove(raw, self.UUIDS[device.value].bytes, 16)
        return 0


def test_the_driver_api_names_each_visible_device_by_its_uuid(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver())
    assert launch.visible_uuids() == [str(u) for u in FakeDriver.UUIDS]
    assert gpu_pool({}) == ["0", "1"]


def test_a_training_stage_on_several_devices_runs_under_torchrun_one_process_each():
    assert processes({"CUDA_VISIBLE_DEVICES": "4,5"}) == 2 and processes({"CUDA_VISIBLE_DEVICES": "0"}) == 1
    assert processes({}) == 1  # a CPU job
    assert stage_command("train_segmentation", "{}", 2, python="py") == \
        ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "stages.train_segmentation",
         "{}"]
    assert stage_command("train_segmentation", "{}", 1, python="py") == ["py", "-m", "stages.train_segmentation", "{}"]
    # a per-image stage stays one process whatever it is given
    assert stage_command("make_cams", "{}", 2, python="py") == ["py", "-m", "stages.make_cams", "{}"]
