"""Device selection, precision and the CUDA switches of each stage (on a stand-in GPU: torch is told it has one)."""
import importlib
import os

import pytest
import torch
from conftest import stage_job

from stages import StageError
from stages.core.host import PINNED
from stages.core.runtime import job_runtime, make_runtime

# the torch.backends switches a runtime sets on CUDA
BACKENDS = [(torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "deterministic"),
            (torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch finds a GPU (nothing runs on it); the switches a runtime sets are restored after the test."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"Fake GPU {device}")
    saved = [(module, name, getattr(module, name)) for module, name in BACKENDS]
    yield
    for module, name, value in saved:  # cuBLAS's switches are properties monkeypatch cannot restore
        setattr(module, name, value)


def test_cuda_asked_for_where_there_is_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(StageError, match="device: cuda was asked for but torch finds no CUDA device"):
        make_runtime("cuda")
    assert make_runtime("auto").device.type == "cpu"


def test_cpu_can_be_forced():
    rt = make_runtime("cpu", seed=3)
    assert rt.device.type == "cpu" and not rt.cuda and rt.seed == 3


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(monkeypatch, native, expected):
    monkeypatch.setattr("stages.core.runtime.native_bf16", lambda device: native)
    assert make_runtime("cpu").dtype is expected
    assert make_runtime("cpu", precision="fp32").dtype is None
    assert make_runtime("cpu", precision="bf16").dtype is torch.bfloat16


def test_autocast_follows_the_precision():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with make_runtime("cpu", precision="bf16").autocast():
        assert conv(x).dtype == torch.bfloat16
    with make_runtime("cpu", precision="fp32").autocast():
        assert conv(x).dtype == torch.float32
    assert make_runtime("cpu", precision="bf16").precision == "bf16"


def test_unknown_precision_is_named():
    with pytest.raises(StageError, match="precision: unknown value 'fp8' \\(expected auto, fp32, bf16, fp16\\)"):
        make_runtime("cpu", precision="fp8")


def test_cudnn_autotunes_only_where_shapes_repeat(fake_cuda):
    """Per-image stages meet a new shape with nearly every image: each would rerun the autotuner."""
    assert make_runtime("cuda").cuda and torch.backends.cudnn.benchmark is False
    make_runtime("cuda", autotune=True)
    assert torch.backends.cudnn.benchmark is True


class Stop(Exception):
    pass


@pytest.mark.parametrize("stage, autotune", [("train_classifier", True), ("train_affinity", True),
                                             ("train_segmentation", True), ("make_cams", False), ("random_walk", False),
                                             ("predict_segmentation", False)])
def test_the_training_stages_ask_for_autotuning_and_the_per_image_stages_do_not(monkeypatch, stage, autotune):
    asked = []

    def asking(job, autotune=False):
        asked.append(autotune)
        raise Stop  # the stage's work is not the point

    module = importlib.import_module(f"stages.{stage}")
    monkeypatch.setattr("stages.core.trainer.job_runtime", asking)
    if hasattr(module, "job_runtime"):
        monkeypatch.setattr(module, "job_runtime", asking)
    with pytest.raises(Stop):
        module.run(stage_job(stage, wildcards={"variant": "puzzle"}))
    assert asked == [autotune]


def test_fp32_computes_in_fp32_without_tf32(fake_cuda):
    """On Ampere and later TF32 would round fp32 convolutions and matmuls to a 10-bit mantissa."""
    make_runtime("cuda", precision="fp32")
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    make_runtime("cuda", precision="bf16")  # torch's defaults
    assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is False


def test_a_gpu_that_emulates_bf16_computes_in_fp16_under_auto(fake_cuda, monkeypatch):
    """V100 and T4 emulate bf16, slower than fp32: torch counts them as bf16-capable unless told not to."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    rt = make_runtime("cuda")
    assert rt.precision == "fp16" and rt.dtype is torch.float16 and rt.grad_scaler().is_enabled()
    assert make_runtime("cuda", precision="bf16").dtype is torch.bfloat16  # asked for: emulated if need be
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert make_runtime("cuda").precision == "bf16"


def test_only_fp16_scales_the_loss():
    assert make_runtime("cpu", precision="fp16").grad_scaler().is_enabled()
    assert not make_runtime("cpu", precision="bf16").grad_scaler().is_enabled()
    assert not make_runtime("cpu", precision="fp32").grad_scaler().is_enabled()


def test_deterministic_makes_a_gpu_run_repeatable(fake_cuda, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # restored after the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    try:
        rt = make_runtime("cuda", deterministic=True, autotune=True)
        assert rt.deterministic and torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # before anything ran on the GPU
        assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
        make_runtime("cuda", autotune=True)
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic is False and torch.backends.cudnn.benchmark is True
    finally:
        torch.use_deterministic_algorithms(False)


RUNTIME = {"device": "cpu", "precision": "fp16", "deterministic": True, "seed": 3}


def test_the_runtime_of_the_job_reaches_the_runtime(monkeypatch):
    made = []
    monkeypatch.setattr("stages.core.runtime.make_runtime", lambda *a: made.append(a))
    job_runtime(stage_job("make_cams", params={"runtime": RUNTIME}, threads=4, resources={"workers": 2}), autotune=True)
    assert made == [("cpu", 3, 2, 4, "fp16", True, True)]


@pytest.mark.parametrize("threads, workers, expected", [(8, 8, (4, 4)), (3, 1, (1, 0)), (1, 0, (1, 0))])
def test_the_processes_of_a_torchrun_job_share_its_threads_and_workers(monkeypatch, threads, workers, expected):
    """Two processes on an 8-CPU job: 4 threads and 4 loader workers each, not 8 and 8 (at least one thread)."""
    made = []
    monkeypatch.setattr("stages.core.runtime.make_runtime", lambda *a: made.append(a))
    monkeypatch.setenv("WORLD_SIZE", "2")
    job_runtime(stage_job("train_classifier", params={"runtime": RUNTIME}, threads=threads, resources={"workers": workers}))
    assert (made[0][3], made[0][2]) == expected


def test_every_runtime_logs_its_device_and_precision_first(fake_cuda, monkeypatch, caplog):
    with caplog.at_level("INFO", logger="stages"):
        make_runtime("cpu", precision="fp32")
        make_runtime("cuda", precision="bf16")
        monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of a torchrun job
        make_runtime("auto", precision="fp16")
    assert [r.getMessage() for r in caplog.records] == [
        "runtime: device cpu, precision fp32", "runtime: device cuda:0 (Fake GPU 0), precision bf16",
        "runtime: device cuda:1 (Fake GPU 1), precision fp16"]


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_a_job_given_a_gpu_whose_torch_finds_no_cuda_stops_saying_why(monkeypatch, device):
    """stages.core.launch marks a job it pinned to GPUs on a host with the CUDA driver: training it on the CPU instead would
    take hours where minutes were meant."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(PINNED, "0")
    with pytest.raises(StageError, match=rf"^device: {device}: this job was given GPU 0 but (torch \S+ is built without "
                                         r"CUDA|this host has no CUDA driver \(libcuda.so.1\)|torch \S+ \(CUDA .*\) "
                                         r"finds no usable GPU: .*); install a torch build for this host's driver, or "
                                         r"set device: cpu$"):
        make_runtime(device)
    assert make_runtime("cpu").device.type == "cpu"
    monkeypatch.delenv(PINNED)  # a host without the driver: the job computes on the CPU
    assert make_runtime("auto").device.type == "cpu"
