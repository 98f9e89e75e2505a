"""Architectures as data: specs, blocks, the builder, the catalog and the search space."""

from searchspace.builder import EfficientNetV2, build_model
from searchspace.catalog import list_catalog, load_arch
from searchspace.errors import EffnasError, SpecError, WeightsError
from searchspace.profile import count_flops, count_parameters
from searchspace.spec import BLOCK_TYPES, ArchSpec, Lineage, StageSpec
from searchspace.weights import (
    WeightsImport,
    load_torchvision_weights,
    load_weights,
    read_weights,
    save_weights,
    torchvision_key_map,
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
