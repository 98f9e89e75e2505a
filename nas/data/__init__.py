"""Datasets: the registry of sources, the search and held-out splits, their loaders.

- :mod:`nas.data.sources`: the registry, ``--dataset NAME[:PATH]`` -> the dataset's images and
  classes (embedded digits, generated patterns, image folders, CIFAR, Flowers102, StanfordCars).
  Nothing is ever downloaded.
- :mod:`nas.data.bundle`: :func:`load_dataset` carves the search and held-out splits by seed,
  resizes (or, for training, random-resized crops) and normalizes, and :class:`DataBundle` makes
  the loaders.
- :mod:`nas.data.config`: :class:`DataConfig`, the dataset settings every run config shares.

This package owns reading data; it must not train, time or search.
"""

from __future__ import annotations

from nas.data.config import TRAIN_CROPS, DataConfig
from searchspace.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "CROP_AREA": "nas.data.bundle",
        "CROP_ASPECT": "nas.data.bundle",
        "IMAGENET_MEAN": "nas.data.bundle",
        "IMAGENET_STD": "nas.data.bundle",
        "DataBundle": "nas.data.bundle",
        "load_dataset": "nas.data.bundle",
        "DATASETS": "nas.data.sources",
        "list_datasets": "nas.data.sources",
        "parse_dataset_spec": "nas.data.sources",
        "synthetic_images": "nas.data.sources",
    },
)

__all__ = [
    "CROP_AREA",
    "CROP_ASPECT",
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRAIN_CROPS",
    "DataBundle",
    "DataConfig",
    "list_datasets",
    "load_dataset",
    "parse_dataset_spec",
    "synthetic_images",
]
