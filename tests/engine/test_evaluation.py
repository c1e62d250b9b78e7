"""engine.evaluation: clean accuracy over tensors and datasets, progress, stop, mode restore."""
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from engine.errors import InvalidParameterError
from engine.evaluation import accuracy


class FirstPixel(nn.Module):
    """Predicts class 1 when the first pixel is > 0.5, else class 0 (answers are known)."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(1)

    def forward(self, x):
        p = x.flatten(1)[:, :1]
        return torch.cat([0.5 - p, p - 0.5], dim=1)


def _data(n=50):
    x = torch.rand(n, 1, 4, 4)
    y = (x[:, 0, 0, 0] > 0.5).long()
    y[:10] = 1 - y[:10]  # the first 10 labels are wrong on purpose
    return x, y


def test_accuracy_counts_exactly_on_tensors_and_datasets():
    x, y = _data()
    model = FirstPixel()
    res = accuracy(model, x, y, batch_size=7)
    assert (res.correct, res.total) == (40, 50) and res.accuracy == pytest.approx(0.8)
    res_ds = accuracy(model, TensorDataset(x, y), batch_size=16)
    assert res_ds.correct == 40
    first = accuracy(model, x, y, n=10)
    assert first.correct == 0 and first.total == 10


def test_progress_stop_and_mode_restored():
    x, y = _data()
    model = FirstPixel().train()
    seen = []
    res = accuracy(model, x, y, batch_size=10, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(10, 50), (20, 50), (30, 50), (40, 50), (50, 50)]
    assert model.training and model.bn.training
    calls = iter([False, False, True])
    stopped = accuracy(model, x, y, batch_size=10, should_stop=lambda: next(calls))
    assert stopped.stopped and stopped.total == 20


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"batch_size": 0}])
def test_bad_arguments_raise(kwargs):
    x, y = _data()
    with pytest.raises(InvalidParameterError):
        accuracy(FirstPixel(), x, y, **kwargs)


def test_labels_required_with_tensors():
    x, _ = _data()
    with pytest.raises(InvalidParameterError, match="labels"):
        accuracy(FirstPixel(), x)
