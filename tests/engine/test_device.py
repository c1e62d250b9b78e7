"""engine.device.resolve_device."""
import pytest
import torch

from engine.device import resolve_device
from engine.errors import InvalidParameterError


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cpu_and_device_objects():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidParameterError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_cuda_index_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(InvalidParameterError, match="only 1"):
        resolve_device("cuda:3")
    with pytest.raises(InvalidParameterError, match="cuda:N"):
        resolve_device("cuda:x")


@pytest.mark.parametrize("name", ["gpu", "tpu", "", 3])
def test_unknown_names_are_refused(name):
    with pytest.raises(InvalidParameterError):
        resolve_device(name)
