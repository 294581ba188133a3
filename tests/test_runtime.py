"""Device selection."""
import pytest
import torch

from stages import StageError
from stages.core.runtime import make_runtime


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
    with pytest.raises(StageError, match="precision: unknown value 'fp16' \\(expected auto, fp32, bf16\\)"):
        make_runtime("cpu", precision="fp16")
