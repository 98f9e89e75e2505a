"""Initial weights for fine-tuning (``nas train --init``): torchvision's or effnas' own files."""

from __future__ import annotations

from nas.train.config import split_init
from searchspace.builder import EfficientNetV2
from searchspace.errors import WeightsError
from searchspace.weights import load_torchvision_weights, read_torch_file, read_weights

__all__ = ["check_initial_weights", "load_initial_weights"]


def check_initial_weights(init: str) -> None:
    """Refuse an ``--init`` file that is not a readable torch file, before any data is loaded
    (its tensors are mapped, not read; whether they fit the net is checked when they load).

    Raises:
        WeightsError: the file is missing, unreadable, or not a torch file.
    """
    if init:
        read_torch_file(split_init(init)[1], "--init file", lazy=True)


def load_initial_weights(model: EfficientNetV2, init: str) -> str:
    """Load ``torchvision:PATH`` or ``effnas:PATH`` into ``model`` in place; a one-line summary.

    The classifier is loaded only if the file's has the model's number of classes; otherwise the
    model keeps its fresh classifier (fine-tuning on a dataset with other classes).

    Raises:
        WeightsError: the file is missing, unreadable, or holds another architecture.
    """
    kind, path = split_init(init)
    if kind == "torchvision":
        done = load_torchvision_weights(model, path, strict_classifier=False)
        loaded, skipped = done.loaded, done.skipped
    else:
        file_spec, state = read_weights(path)
        ours = model.spec
        # Same network, whatever its classes, regularization and image sizes.
        same = file_spec.replace(
            num_classes=ours.num_classes,
            dropout=ours.dropout,
            drop_path_rate=ours.drop_path_rate,
            train_resolution=ours.train_resolution,
            eval_resolution=ours.eval_resolution,
        )
        if same != ours:
            raise WeightsError(
                f"weights file {path!r} holds {file_spec.label} ({file_spec.hash}), not the "
                f"architecture being trained ({ours.label})"
            )
        own = model.state_dict()
        skipped = tuple(
            key
            for key in ("classifier.weight", "classifier.bias")
            if key not in state or state[key].shape != own[key].shape
        )
        result = model.load_state_dict(
            {key: value for key, value in state.items() if key not in skipped}, strict=False
        )
        if result.unexpected_keys or set(result.missing_keys) - set(skipped):
            raise WeightsError(f"weights file {path!r} does not fit {ours.label}: {result}")
        loaded = len(state) - len(skipped)
    fresh = " (classifier left fresh for the dataset's classes)" if skipped else ""
    return f"initialized from {init}: {loaded} tensors{fresh}"
