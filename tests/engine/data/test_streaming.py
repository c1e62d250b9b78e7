"""Streamed analyses: the OOD suite and unit statistics read their images batch by batch from a
Dataset (``engine.data.Sample``) and give exactly the numbers of the in-memory path, with peak
memory that does not grow with the number of images."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.data import Sample, TensorImageDataset, iter_batches, shapes
from engine.featvis.examples import rank
from engine.generalisation import evaluate_ood, unit_statistics

REPO = Path(__file__).resolve().parents[3]


def _cnn(seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    )


def _dataset(n: int = 50, classes: int = 4, seed: int = 0) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    return TensorImageDataset(images, labels, shapes.SPEC)


class _Items(torch.utils.data.Dataset):
    """A plain (image, label) dataset without ``batch``: the generic path of ``slice_batch``."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


def test_iter_batches_covers_every_image_once_in_order():
    data = _dataset(23)
    images, labels = data.batch(torch.arange(23))
    for source in (Sample(data, 23), _Items(data), (images, labels)):
        got = list(iter_batches(source, 5))
        assert [len(x) for x, _ in got] == [5, 5, 5, 5, 3]
        assert torch.equal(torch.cat([x for x, _ in got]), images)
        assert torch.equal(torch.cat([y for _, y in got]), labels)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_ood_on_a_stream_equals_the_in_memory_table(batch_size):
    data = _dataset(30)
    images, labels = data.batch(torch.arange(30))
    models = {"a": _cnn(0), "b": _cnn(1)}
    kwargs = dict(distortions=["gaussian_noise", "patch_shuffle"], severities=[1, 3], batch_size=batch_size, seed=4)
    in_memory = evaluate_ood(models, images, labels, **kwargs).table
    for source in (Sample(data, 30), _Items(data)):
        streamed = evaluate_ood(models, source, **kwargs).table
        assert streamed.equals(in_memory)


@pytest.mark.parametrize("batch_size", [1, 4, 50])
def test_unit_statistics_on_a_stream_equal_the_in_memory_statistics(batch_size):
    data = _dataset(50)
    images, labels = data.batch(torch.arange(50))
    model = _cnn(2)
    layers = ["0", "2", "6"]  # two conv layers and the (N, C) pooled features
    in_memory = unit_statistics(model, images, labels, layers, top_k=7, batch_size=50)
    streamed = unit_statistics(model, Sample(data, 50), None, layers, top_k=7, batch_size=batch_size)
    assert streamed.n_images == 50
    for layer in layers:
        a, b = in_memory.layers[layer], streamed.layers[layer]
        np.testing.assert_array_equal(a.top_indices, b.top_indices)
        np.testing.assert_array_equal(a.distinct_labels, b.distinct_labels)
        np.testing.assert_array_equal(a.active, b.active)
        np.testing.assert_allclose(a.label_entropy, b.label_entropy)
        np.testing.assert_allclose(a.roughness, b.roughness, rtol=1e-6, equal_nan=True)  # float32 convs differ by batch size
        np.testing.assert_allclose(a.high_freq_share, b.high_freq_share, rtol=1e-6, equal_nan=True)  # float32 convs differ by batch size
        np.testing.assert_allclose(a.mean_activation, b.mean_activation, rtol=1e-5, atol=1e-6)


def test_streamed_top_k_breaks_ties_like_rank_over_all_images():
    """Many images score exactly the same (a ReLU unit at 0): the running top-k must keep the
    lowest indices among them, as ``rank`` over the whole (N,) score vector does."""
    data = _dataset(40)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0.0, -1.0, 1.0, 0.0]))
        model[0].weight[3, 0, 0, 0] = 1.0          # unit 3 follows the red channel: no ties
    report = unit_statistics(model, Sample(data, 40), None, ["3"], top_k=6, batch_size=3)
    images, _ = data.batch(torch.arange(40))
    with torch.no_grad():
        scores = model(images).numpy()
    stats = report.layers["3"]
    for u in range(4):
        np.testing.assert_array_equal(stats.top_indices[u], rank(scores[:, u], 6).indices)
    assert list(stats.top_indices[0]) == [0, 1, 2, 3, 4, 5] and not stats.active[0] and stats.active[3]


# ------------------------------------------------------------------ memory
_RSS_SCRIPT = """
import json, resource, sys, torch
from torch import nn
torch.set_num_threads(1)
from engine.generalisation import evaluate_ood, unit_statistics

class Lazy(torch.utils.data.Dataset):
    '''n seeded random 3x64x64 images made when read (48 KB each as float32).'''
    def __init__(self, n): self.n = n
    def __len__(self): return self.n
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand((3, 64, 64), generator=g), i % 4

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
kind, n = sys.argv[1], int(sys.argv[2])
def run(n):
    if kind == "ood":
        evaluate_ood({"m": model}, Lazy(n), distortions=["gaussian_noise"], severities=[1], batch_size=50)
    else:
        unit_statistics(model, Lazy(n), None, ["1"], top_k=5, batch_size=50)
for _ in range(2):
    run(100)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run(n)
print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["ood", "units"])
def test_peak_memory_does_not_grow_with_the_number_of_images(kind):
    """1,600 images of 48 KB would need ~58 MB more than 400 if they were held at once; the
    streamed pass may grow by a few MB of allocator noise at most."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    peaks = {}
    for n in (400, 1600):
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, kind, str(n)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        numbers = json.loads(out.stdout.strip().splitlines()[-1])
        peaks[n] = (numbers["peak_kb"] - numbers["base_kb"]) / 1024
    assert peaks[1600] - peaks[400] < 8, f"peak MB above a warmed-up run of 100 images: {peaks}"
