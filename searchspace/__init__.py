"""Architectures as data: specs, blocks, the builder, the catalog and the search space.

- :mod:`searchspace.spec`: :class:`ArchSpec`, a frozen, validated net description;
  :mod:`searchspace.blocks` and :mod:`searchspace.builder`: the modules, and the one place that
  turns a spec into an ``nn.Module``; :mod:`searchspace.catalog`: the published EfficientNetV2s;
- :mod:`searchspace.space`: what a search may sample; :mod:`searchspace.profile`: the one place
  that counts parameters and FLOPs; :mod:`searchspace.weights`: weights files;
- the shared ground: :mod:`searchspace.errors`, :mod:`searchspace.checks`,
  :mod:`searchspace.files`, :mod:`searchspace.lazy` (the heavy modules load on first use).

The bottom layer: it imports nothing from ``nas``, ``scaling`` or ``results``; no training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from searchspace.catalog import list_catalog, load_arch
from searchspace.errors import EffnasError, SpecError, WeightsError
from searchspace.lazy import lazy_exports
from searchspace.spec import BLOCK_TYPES, ArchSpec, Lineage, StageSpec

if TYPE_CHECKING:
    from searchspace.builder import EfficientNetV2, build_model
    from searchspace.profile import count_flops, count_parameters, spec_flops, spec_parameters
    from searchspace.weights import (
        WeightsImportResult,
        load_torchvision_weights,
        load_weights,
        read_weights,
        save_weights,
        torchvision_key_map,
    )

__getattr__ = lazy_exports(
    __name__,
    {
        "EfficientNetV2": "searchspace.builder",
        "build_model": "searchspace.builder",
        "count_flops": "searchspace.profile",
        "count_parameters": "searchspace.profile",
        "spec_flops": "searchspace.profile",
        "spec_parameters": "searchspace.profile",
        "WeightsImportResult": "searchspace.weights",
        "load_torchvision_weights": "searchspace.weights",
        "load_weights": "searchspace.weights",
        "read_weights": "searchspace.weights",
        "save_weights": "searchspace.weights",
        "torchvision_key_map": "searchspace.weights",
    },
)


__all__ = [
    "BLOCK_TYPES",
    "ArchSpec",
    "EfficientNetV2",
    "EffnasError",
    "Lineage",
    "SpecError",
    "StageSpec",
    "WeightsError",
    "WeightsImportResult",
    "build_model",
    "count_flops",
    "count_parameters",
    "list_catalog",
    "load_arch",
    "load_torchvision_weights",
    "load_weights",
    "read_weights",
    "save_weights",
    "spec_flops",
    "spec_parameters",
    "torchvision_key_map",
]
