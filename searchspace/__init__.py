"""Architectures as data: specs, blocks, the builder, the catalog and the search space.

The torch-free parts (specs, errors, the catalog) import eagerly; the builder, profiling and
weights modules import torch, so they load on first use (PEP 562). ``nas --help`` and every
bad-input error then answer without paying for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from searchspace.catalog import list_catalog, load_arch
from searchspace.errors import EffnasError, SpecError, WeightsError
from searchspace.spec import BLOCK_TYPES, ArchSpec, Lineage, StageSpec

if TYPE_CHECKING:
    from searchspace.builder import EfficientNetV2, build_model
    from searchspace.profile import count_flops, count_parameters
    from searchspace.weights import (
        WeightsImport,
        load_torchvision_weights,
        load_weights,
        read_weights,
        save_weights,
        torchvision_key_map,
    )

_LAZY = {
    "EfficientNetV2": "searchspace.builder",
    "build_model": "searchspace.builder",
    "count_flops": "searchspace.profile",
    "count_parameters": "searchspace.profile",
    "WeightsImport": "searchspace.weights",
    "load_torchvision_weights": "searchspace.weights",
    "load_weights": "searchspace.weights",
    "read_weights": "searchspace.weights",
    "save_weights": "searchspace.weights",
    "torchvision_key_map": "searchspace.weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'searchspace' has no attribute {name!r}")


__all__ = [
    "BLOCK_TYPES",
    "ArchSpec",
    "EfficientNetV2",
    "EffnasError",
    "Lineage",
    "SpecError",
    "StageSpec",
    "WeightsError",
    "WeightsImport",
    "build_model",
    "count_flops",
    "count_parameters",
    "list_catalog",
    "load_arch",
    "load_torchvision_weights",
    "load_weights",
    "read_weights",
    "save_weights",
    "torchvision_key_map",
]
