"""Which data a run uses and how it is split: :class:`DataConfig`, shared by every run's config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nas.errors import ConfigError
from searchspace.checks import check_int, check_number

__all__ = ["TRAIN_CROPS", "DataConfig"]

#: How training images are cut (:func:`nas.data.bundle.load_dataset`): ``none`` (the whole image,
#: resized) or ``random-resized`` (the reference code's scale augmentation: a random crop of 5-100%
#: of the area, aspect ratio 3/4 to 4/3, resized to the image size).
TRAIN_CROPS = ("none", "random-resized")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """The dataset and its split; :class:`~nas.evaluate.config.EvalConfig` and
    :class:`~nas.train.progressive.ProgressiveConfig` extend it.

    Attributes:
        dataset: ``NAME[:PATH]`` from the :mod:`nas.data.sources` registry.
        heldout_fraction: fraction of the training set held out for accuracy.
        test_fraction: fraction of the training set carved as the test split when the dataset
            has no test split of its own.
        max_train_images: cap on the search split's size, or ``None`` for all of it.
        num_workers: data-loading processes; ``None`` chooses (none for in-memory data).
    """

    dataset: str = "mnist5k"
    heldout_fraction: float = 0.1
    test_fraction: float = 0.1
    max_train_images: int | None = None
    num_workers: int | None = None

    def __post_init__(self) -> None:
        from nas.data.sources import parse_dataset_spec

        parse_dataset_spec(self.dataset)  # an unknown name fails here, before anything loads
        check_number(
            "heldout_fraction", self.heldout_fraction, 0.0, 1.0, ConfigError, above=True, below=True
        )
        check_number(
            "test_fraction", self.test_fraction, 0.0, 1.0, ConfigError, above=True, below=True
        )
        if self.heldout_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"heldout_fraction + test_fraction must leave images to train on, got "
                f"{self.heldout_fraction:g} + {self.test_fraction:g}"
            )
        if self.max_train_images is not None:
            check_int("max_train_images", self.max_train_images, 1, ConfigError)
        if self.num_workers is not None:
            check_int("num_workers", self.num_workers, 0, ConfigError)

    def load(
        self,
        image_size: int,
        *,
        seed: int,
        train_augment: Callable[[Any], Any] | None = None,
        train_crop: str = "none",
    ) -> Any:
        """:func:`~nas.data.bundle.load_dataset` with these settings (a ``DataBundle``)."""
        from nas.data.bundle import load_dataset

        return load_dataset(
            self.dataset,
            image_size,
            seed=seed,
            heldout_fraction=self.heldout_fraction,
            test_fraction=self.test_fraction,
            max_train_images=self.max_train_images,
            train_augment=train_augment,
            train_crop=train_crop,
        )
