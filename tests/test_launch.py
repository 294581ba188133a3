"""GPU slots: each job runs on its own devices, never two on one unless the pool lists a device twice."""
import os
import subprocess
import sys

import pytest

from stages import StageError
from stages.core.launch import acquire, cuda_driver, gpu_pool, lock_dir, pinned_env, processes, stage_command, try_acquire


def test_the_pool_is_cuda_visible_devices_with_a_slot_per_entry():
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": "0,0,1"}) == ["0", "0", "1"]  # two jobs may share device 0
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": ""}) == [] and gpu_pool({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_a_host_without_the_cuda_driver_has_no_pool_and_never_imports_torch():
    """Every GPU job on a CPU host goes through launch: torch's seconds of import are saved there."""
    probe = ("import sys; import stages.core.launch as launch; launch.cuda_driver = lambda: False; "
             "print(launch.gpu_pool({}), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "False"]
    import torch

    # where the driver is, the pool is every device torch sees
    assert gpu_pool({}) == ([str(i) for i in range(torch.cuda.device_count())] if cuda_driver() else [])


def test_jobs_take_free_slots_and_a_finished_job_frees_its_own(tmp_path):
    pool = ["0", "1", "2"]
    first, fds_first = try_acquire(pool, 1, tmp_path)
    second, fds_second = try_acquire(pool, 2, tmp_path)
    assert first == ["0"] and second == ["1", "2"]
    assert try_acquire(pool, 1, tmp_path) is None  # every slot is held
    for fd in fds_second:
        os.close(fd)
    assert try_acquire(pool, 2, tmp_path)[0] == ["1", "2"]


def test_a_lock_is_released_when_its_process_ends_however_it_ends(tmp_path):
    held = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                             "from stages.core.launch import try_acquire; "
                             f"try_acquire(['0'], 1, Path({str(tmp_path)!r})); print('held', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    assert held.stdout.readline() == "held\n"
    assert try_acquire(["0"], 1, tmp_path) is None
    held.kill()
    held.wait()
    assert try_acquire(["0"], 1, tmp_path)[0] == ["0"]


def test_more_gpus_than_the_host_has_is_one_clear_error(tmp_path):
    with pytest.raises(StageError, match=r"--gpus 3: this host has 2 GPU slot\(s\) \(0,1\)"):
        acquire(["0", "1"], 3, tmp_path)


def test_a_pinned_job_sees_only_its_devices_and_a_cpu_job_is_left_alone(tmp_path):
    env, fds = pinned_env(2, {"CUDA_VISIBLE_DEVICES": "4,5,6", "HOME": "/h"}, tmp_path)
    assert env == {"CUDA_VISIBLE_DEVICES": "4,5", "HOME": "/h"} and len(fds) == 2
    assert pinned_env(0, {"CUDA_VISIBLE_DEVICES": "4,5,6"}, tmp_path) == ({"CUDA_VISIBLE_DEVICES": "4,5,6"}, [])


def test_each_slurm_allocation_has_its_own_locks():
    assert lock_dir({"SLURM_JOB_ID": "17"}) != lock_dir({"SLURM_JOB_ID": "18"}) != lock_dir({})


def test_a_training_stage_on_several_devices_runs_under_torchrun_one_process_each():
    assert processes({"CUDA_VISIBLE_DEVICES": "4,5"}) == 2 and processes({"CUDA_VISIBLE_DEVICES": "0"}) == 1
    assert processes({}) == 1  # a CPU job
    assert stage_command("stages.train_segmentation", ["--out", "m.pt"], 2, python="py") == \
        ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "stages.train_segmentation",
         "--out", "m.pt"]
    assert stage_command("stages.train_segmentation", ["--out", "m.pt"], 1, python="py") == \
        ["py", "-m", "stages.train_segmentation", "--out", "m.pt"]
    # a per-image stage stays one process whatever it is given
    assert stage_command("stages.make_cams", ["--out", "c"], 2, python="py") == ["py", "-m", "stages.make_cams", "--out", "c"]
