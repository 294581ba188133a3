"""Device selection."""
import pytest
import torch

from stages import StageError
from stages.runtime import make_runtime


def test_cuda_asked_for_where_there_is_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(StageError, match="device: cuda was asked for but torch finds no CUDA device"):
        make_runtime("cuda")
    assert make_runtime("auto").device.type == "cpu"


def test_cpu_can_be_forced():
    rt = make_runtime("cpu", seed=3)
    assert rt.device.type == "cpu" and not rt.cuda and rt.seed == 3
