"""Datasets: a registry of specs and loaders, the synthetic ``shapes`` set and real image sets.

Everything yields images as float32 tensors in [0, 1], shape (C, H, W), with integer labels.
Real data lives under :func:`data_root` (``$ROBUSTSCOPE_DATA``, else ``./data``); ``shapes`` is
generated offline from a seed and is the default when nothing else is available.
"""
from engine.data.base import DATA_ENV, DatasetSpec, TensorImageDataset, data_root
from engine.data.imagefolder import imagefolder_spec
from engine.data.registry import (
    DATASETS,
    LOADERS,
    Sample,
    dataset_available,
    dataset_size,
    get_spec,
    iter_batches,
    load_dataset,
    slice_batch,
    take,
    take_indices,
)

__all__ = [
    "DATA_ENV",
    "DATASETS",
    "LOADERS",
    "DatasetSpec",
    "TensorImageDataset",
    "data_root",
    "dataset_available",
    "get_spec",
    "imagefolder_spec",
    "load_dataset",
    "Sample",
    "dataset_size",
    "iter_batches",
    "slice_batch",
    "take",
    "take_indices",
]
