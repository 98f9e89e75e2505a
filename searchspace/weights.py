"""Weights in and out of effnas models: torchvision's EfficientNetV2 files and effnas' own files.

torchvision's ``efficientnet_v2_s/_m/_l`` are the catalog's ``efficientnetv2-s/-m/-l`` tensor
for tensor, under other names: :func:`torchvision_key_map` writes the correspondence out by
walking the effnas model, and :func:`load_torchvision_weights` checks every tensor's name and
shape against it before copying anything, so a file for another net is refused, never
half-loaded. An effnas weights file (:func:`save_weights`, :func:`load_weights`) is a
``torch.save``'d dict of plain data, the state dict and its spec, read with ``weights_only=True``.
The ``nas weights import`` command: docs/architectures-and-weights.md.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from searchspace.blocks import FusedMBConv, MBConv
from searchspace.builder import EfficientNetV2
from searchspace.errors import EffnasError, SpecError, WeightsError
from searchspace.files import atomic_write
from searchspace.spec import ArchSpec

__all__ = [
    "WEIGHTS_FORMAT",
    "WeightsImportResult",
    "load_torchvision_weights",
    "load_weights",
    "read_torch_file",
    "read_weights",
    "save_weights",
    "torchvision_key_map",
]

#: The ``format`` tag of an effnas weights file (:func:`save_weights`).
WEIGHTS_FORMAT = "effnas-weights"
_WEIGHTS_VERSION = 1

# The parts of each block that hold tensors, in the order torchvision's ``block`` Sequential holds
# them. A part that is ``nn.Identity`` (no expansion conv, no SE, no project conv) is absent from
# torchvision's Sequential too, so the numbering skips it.
_BLOCK_PARTS: dict[type[nn.Module], tuple[str, ...]] = {
    MBConv: ("conv_pw", "conv_dw", "se", "conv_pwl"),
    FusedMBConv: ("conv_exp", "se", "conv_pwl"),
}
_CLASSIFIER_KEYS = ("classifier.weight", "classifier.bias")


@dataclass(frozen=True)
class WeightsImportResult:
    """What an import did.

    Attributes:
        source: the file path, or ``"<state dict>"`` for an in-memory dict.
        loaded: number of tensors copied into the model.
        skipped: effnas keys left at their initialization (a classifier whose number of
            classes differs, with ``strict_classifier=False``; BN batch counters a file lacks).
        parameters: number of parameter elements copied.
    """

    source: str
    loaded: int
    skipped: tuple[str, ...]
    parameters: int


def _prefixed(prefix: str, module: nn.Module, target: str) -> dict[str, str]:
    return {f"{prefix}.{key}": f"{target}.{key}" for key in module.state_dict()}


def torchvision_key_map(model: EfficientNetV2) -> dict[str, str]:
    """The torchvision state-dict key of every tensor of ``model``, in the model's order.

    torchvision's layout: ``features.0`` is the stem, ``features.{i+1}`` stage ``i`` (each block's
    parts numbered in ``block.{k}``), ``features.{n+1}`` the head, ``classifier.1`` the linear
    layer (``classifier.0`` is its dropout).

    Args:
        model: an effnas model from :func:`~searchspace.builder.build_model`.

    Returns:
        effnas key -> torchvision key, covering every entry of ``model.state_dict()``.
    """
    if not isinstance(model, EfficientNetV2):
        raise TypeError(f"expected an effnas EfficientNetV2, got {type(model).__name__}")
    key_map = _prefixed("stem", model.stem, "features.0")
    for stage_index, stage in enumerate(model.stages):
        for block_index, block in enumerate(stage):
            ours = f"stages.{stage_index}.{block_index}"
            theirs = f"features.{stage_index + 1}.{block_index}.block"
            parts = [
                name
                for name in _BLOCK_PARTS[type(block)]
                if not isinstance(getattr(block, name), nn.Identity)
            ]
            for position, name in enumerate(parts):
                key_map |= _prefixed(f"{ours}.{name}", getattr(block, name), f"{theirs}.{position}")
    key_map |= _prefixed("head", model.head, f"features.{len(model.stages) + 1}")
    key_map |= {key: key.replace("classifier.", "classifier.1.", 1) for key in _CLASSIFIER_KEYS}
    # Every tensor must have a partner: a block part added without updating _BLOCK_PARTS is a bug.
    unmapped = [key for key in model.state_dict() if key not in key_map]
    if unmapped:
        raise RuntimeError(f"torchvision_key_map has no entry for {unmapped[0]}")
    return {key: key_map[key] for key in model.state_dict()}


def _shape(tensor: torch.Tensor) -> str:
    return str(list(tensor.shape))


def _first_line(error: BaseException) -> str:
    # torch's messages go on for sentences of advice; the first sentence says what went wrong.
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(error).__name__


def read_torch_file(
    path: str | os.PathLike[str],
    what: str = "weights file",
    error: type[EffnasError] = WeightsError,
    *,
    data: bytes | None = None,
    lazy: bool = False,
) -> Any:
    """``torch.load(..., weights_only=True)`` of a file the user named: the one reader of torch
    files, which turns every way a foreign or broken file can fail into one line.

    Args:
        path: the file; with ``data``, only its name in messages.
        what: how messages name it (``"weights file"``, ``"checkpoint"``).
        error: the error class.
        data: the file's content, if it was read elsewhere.
        lazy: map the tensors' bytes from the file rather than read them (to check a large file
            cheaply; a zip archive, as torch.save writes, is mapped, any other file is read).

    Raises:
        ``error``: the file is missing, a folder, empty, cut short, not a torch file, or holds
            pickled objects that ``weights_only=True`` refuses to run.
    """
    shown = repr(str(path))
    if data is None and not Path(path).is_file():
        kind = "is a directory, not a file" if Path(path).is_dir() else "does not exist"
        raise error(f"{what} {shown} {kind}")
    try:
        if data is not None:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        mapped = lazy and zipfile.is_zipfile(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except pickle.UnpicklingError as reason:
        # torch's message runs to a page; the unpickler's own complaint is the useful part. An
        # "unsupported global" is a pickled object that weights_only=True refuses to run; any
        # other complaint means the bytes are not a pickle at all.
        match = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(reason))
        detail = match[1].strip() if match else _first_line(reason)
        if "Unsupported global" in detail:
            raise error(
                f"{what} {shown} holds pickled objects, refused with weights_only=True "
                f"({detail.split(' was not')[0]})"
            ) from None
        raise error(f"{what} {shown} is not a readable torch file ({detail})") from None
    except EOFError:
        raise error(f"{what} {shown} is empty or cut short") from None
    except Exception as reason:
        # Foreign bytes reach the unpickler's opcode handlers, which fail with whatever their
        # code meets (IndexError, KeyError, struct.error, UnicodeDecodeError, ...): any of them
        # means the file is not a torch file. A failure of this code would not come from here.
        detail = f"{type(reason).__name__}: {_first_line(reason)}"
        raise error(f"{what} {shown} is not a readable torch file ({detail})") from None


def _as_state_dict(data: Any, source: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping) or not data:
        kind = "an empty dict" if isinstance(data, Mapping) else type(data).__name__
        raise WeightsError(f"{source} must hold a state dict (key -> tensor), got {kind}")
    if data.get("format") == WEIGHTS_FORMAT:
        raise WeightsError(
            f"{source} is an effnas weights file, not a torchvision state dict; "
            "load it with searchspace.load_weights"
        )
    return data


def _match(
    model: nn.Module,
    key_map: Mapping[str, str],
    state: Mapping[str, Any],
    source: str,
    *,
    optional: frozenset[str] = frozenset(),
    classifier_hint: bool = False,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Pair every model tensor with the file's; raise on the first tensor that does not fit.

    ``key_map`` is model key -> file key. Model keys in ``optional`` may be absent or shaped
    differently in the file; they are returned as skipped. ``classifier_hint`` adds to a
    classifier shape mismatch how to keep a fresh classifier instead.

    "First" is in network order: model tensors in the model's order, and a file tensor the model
    has no place for at its position in the file (a genuine state dict is in network order too).
    """
    ours = model.state_dict()
    label = getattr(getattr(model, "spec", None), "label", type(model).__name__)
    matched: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    problem: tuple[int, str] | None = None
    for position, (our_key, file_key) in enumerate(key_map.items()):
        want = ours[our_key]
        found = state.get(file_key)
        if found is None:
            # A BN batch counter only steers momentum when momentum is None (never here), and old
            # files predate it: missing counters are not worth refusing a file for.
            if our_key in optional or our_key.endswith(".num_batches_tracked"):
                skipped.append(our_key)
                continue
            problem = (
                position,
                f"tensor {file_key} is missing (effnas {our_key} needs shape {_shape(want)})",
            )
            break
        if not isinstance(found, torch.Tensor):
            problem = (
                position,
                f"{file_key} is a {type(found).__name__}, not a tensor "
                f"(effnas {our_key} needs shape {_shape(want)})",
            )
            break
        if found.shape != want.shape:
            if our_key in optional:
                skipped.append(our_key)
                continue
            hint = (
                "; the classifier has a different number of classes: load with "
                "strict_classifier=False (nas weights import --num-classes) to keep a fresh one"
                if classifier_hint and our_key in _CLASSIFIER_KEYS
                else ""
            )
            problem = (
                position,
                f"tensor {file_key} has shape {_shape(found)} but effnas "
                f"{our_key} needs {_shape(want)}{hint}",
            )
            break
        matched[our_key] = found
    expected = set(key_map.values())
    for position, file_key in enumerate(state):
        if file_key not in expected:
            if problem is None or position < problem[0]:
                value = state[file_key]
                shape = _shape(value) if isinstance(value, torch.Tensor) else type(value).__name__
                problem = (
                    position,
                    f"tensor {file_key} {shape} has no place in {label}",
                )
            break
    if problem is not None:
        raise WeightsError(f"{source} does not fit {label}: {problem[1]}")
    return matched, skipped


def _load_matched(
    model: nn.Module, matched: dict[str, torch.Tensor], skipped: list[str], source: str
) -> WeightsImportResult:
    # load_state_dict, not hand copies: it copies across dtypes and devices and keeps BN buffers.
    result = model.load_state_dict(matched, strict=False)
    # BatchNorm fills in a missing batch counter itself, so fewer keys than skipped may be missing.
    if result.unexpected_keys or not set(result.missing_keys) <= set(skipped):
        raise RuntimeError(f"weights import out of step with the model: {result}")
    parameter_keys = {name for name, _ in model.named_parameters()}
    parameters = sum(t.numel() for key, t in matched.items() if key in parameter_keys)
    return WeightsImportResult(
        source=source, loaded=len(matched), skipped=tuple(skipped), parameters=parameters
    )


def load_torchvision_weights(
    model: EfficientNetV2,
    state_or_path: Mapping[str, torch.Tensor] | str | os.PathLike[str],
    *,
    strict_classifier: bool = True,
) -> WeightsImportResult:
    """Copy torchvision EfficientNetV2 weights into a matching effnas model, in place.

    Every tensor's key and shape is checked before anything is copied, so a file for another
    architecture leaves ``model`` untouched.

    Args:
        model: an effnas model, e.g. ``build_model(load_arch("efficientnetv2-s"))``.
        state_or_path: a torchvision ``state_dict()`` or the path of a file holding one
            (torchvision's published ``efficientnet_v2_s-*.pth`` files are such files); files are
            read with ``torch.load(..., weights_only=True)``.
        strict_classifier: if False, a classifier whose number of classes differs from the
            model's (or that the file lacks) is skipped and the model keeps its freshly
            initialized classifier: the fine-tuning case. If True, it is an error.

    Returns:
        What was loaded and what was skipped.

    Raises:
        WeightsError: the file is missing or unreadable, or it does not fit the model; the
            message names the first tensor that does not fit, by both keys and both shapes.
    """
    if isinstance(state_or_path, Mapping):
        source, shown, data = "<state dict>", "the state dict", state_or_path
    else:
        source = str(state_or_path)
        shown = f"weights file {source!r}"
        data = read_torch_file(state_or_path)
    state = _as_state_dict(data, shown)
    key_map = torchvision_key_map(model)
    optional = frozenset(() if strict_classifier else _CLASSIFIER_KEYS)
    matched, skipped = _match(
        model, key_map, state, shown, optional=optional, classifier_hint=strict_classifier
    )
    return _load_matched(model, matched, skipped, source)


def save_weights(model: EfficientNetV2, path: str | os.PathLike[str], *, source: str = "") -> Path:
    """Write an effnas weights file: the spec and the state dict, readable with weights_only.

    The file is written to a temporary name first and then renamed, so a crash never leaves a
    half-written file under ``path``.

    Args:
        model: the model to save; its ``spec`` goes into the file.
        path: where to write; parent folders are created.
        source: a note on where the weights came from (e.g. the imported file).

    Returns:
        The path written.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights file {str(path)!r} is a directory; give a file name")
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": _WEIGHTS_VERSION,
        "name": model.spec.label,
        "spec": model.spec.to_dict(),
        "source": source,
        "state_dict": {key: tensor.detach().cpu() for key, tensor in model.state_dict().items()},
    }
    return atomic_write(path, lambda file: torch.save(payload, file), WeightsError)


def read_weights(path: str | os.PathLike[str]) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """The spec and the state dict of an effnas weights file, without building the model.

    Raises:
        WeightsError: the file is missing, unreadable or not an effnas weights file.
        SpecError: the spec inside is invalid (the message names the file and the field).
    """
    shown = f"weights file {str(path)!r}"
    data = read_torch_file(path)
    if not isinstance(data, Mapping) or data.get("format") != WEIGHTS_FORMAT:
        hint = (
            "; it looks like a torchvision state dict: import it with "
            "nas weights import torchvision"
            if isinstance(data, Mapping) and any(str(k).startswith("features.") for k in data)
            else ""
        )
        raise WeightsError(f"{shown} is not an effnas weights file{hint}")
    version = data.get("version")
    if version != _WEIGHTS_VERSION:
        raise WeightsError(f"{shown} has format version {version!r}; this effnas reads 1")
    spec_data, state = data.get("spec"), data.get("state_dict")
    if not isinstance(spec_data, Mapping) or not isinstance(state, Mapping):
        raise WeightsError(f"{shown} lacks its spec or state_dict entry")
    try:
        spec = ArchSpec.from_dict(spec_data)
    except SpecError as error:
        raise SpecError(f"{shown}: {error}") from None
    return spec, dict(state)


def load_weights(path: str | os.PathLike[str]) -> EfficientNetV2:
    """Rebuild the model an effnas weights file holds, with its weights, in eval mode.

    Raises:
        WeightsError: the file is missing, unreadable, not an effnas weights file, or its
            tensors do not fit its own spec (first mismatching tensor named).
    """
    spec, state = read_weights(path)
    model = EfficientNetV2(spec)
    identity = {key: key for key in model.state_dict()}
    matched, skipped = _match(model, identity, state, f"weights file {str(path)!r}")
    _load_matched(model, matched, skipped, str(path))
    return model.eval()
