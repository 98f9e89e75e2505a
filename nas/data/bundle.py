"""A loaded dataset, split for search, with its loaders: :func:`load_dataset` and
:class:`DataBundle`.

:func:`load_dataset` splits a source (:mod:`nas.data.sources`) three ways, disjoint and fixed by
the seed: the *search* split a candidate trains on, the *held-out* split whose accuracy steers a
search, and the *test* split (:attr:`DataBundle.test`) that no search decision reads. Every image
becomes a normalized 3-channel ``image_size`` square; small datasets are held in memory and
resized once, files are decoded by worker processes. Training images may be random-resized crops
(``train_crop="random-resized"``, the reference code's scale augmentation); evaluation images are
resized whole. The splits: docs/datasets.md; the crops and where they differ from the reference
code: docs/training.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, random_split
from torchvision import tv_tensors
from torchvision.transforms import v2

from nas.data.config import TRAIN_CROPS
from nas.data.sources import Source, TensorImages, load_source
from nas.errors import DataError
from searchspace.checks import check_choice, check_int, check_number

__all__ = [
    "CROP_AREA",
    "CROP_ASPECT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRAIN_CROPS",
    "DataBundle",
    "available_cpus",
    "load_dataset",
    "shard_seed",
]

#: Normalization applied to every dataset (ImageNet's statistics, as the published nets use).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The reference code's range of a training crop's area, as a fraction of the image's.
CROP_AREA = (0.05, 1.0)
#: TensorFlow's default aspect-ratio range of ``sample_distorted_bounding_box`` (width / height).
CROP_ASPECT = (3 / 4, 4 / 3)

# In-memory datasets are resized once, up front, when the resized copy stays below this size;
# above it (say CIFAR-10 at 224 px, 7.5 GB) each image is resized when it is read.
_PRERESIZE_LIMIT_BYTES = 1 << 30


class _View(Dataset):
    """Selected items of a source, each turned into a normalized float (3, S, S) tensor.

    ``prepare`` turns the source's image into a uint8 3-channel (S, S) ``tv_tensors.Image``;
    ``augment`` (training only) acts on that; ``finish`` converts to float and normalizes.
    """

    def __init__(
        self,
        source: Dataset,
        indices: list[int] | None,
        prepare: Callable[[Any], Any],
        augment: Callable[[Any], Any] | None,
        finish: Callable[[Any], torch.Tensor],
    ) -> None:
        self.source = source
        self.indices = indices
        self.prepare = prepare
        self.augment = augment
        self.finish = finish

    def __len__(self) -> int:
        return len(self.source) if self.indices is None else len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[index if self.indices is None else self.indices[index]]
        image = self.prepare(image)
        if self.augment is not None:
            image = self.augment(image)
        return self.finish(image), int(label)


def shard_seed(seed: int, rank: int) -> int:
    """The seed of data-parallel worker ``rank``'s own random draws (augmentation, dropout,
    loader worker processes) when ``seed`` is the run's: ``seed`` itself for rank 0, so that one
    worker draws what one process draws, and far apart for the others (the golden-ratio odd
    constant keeps ``seed + rank`` style collisions between ranks and epochs away)."""
    return (seed + rank * 0x9E3779B97F4A7C15) % (1 << 63)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity; the machine's count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class DataBundle:
    """A loaded dataset, split for search, and ready to make loaders.

    Attributes:
        name: the dataset spec it was loaded from, e.g. ``"mnist5k"``.
        image_size: every image is ``(3, image_size, image_size)``.
        num_classes: number of classes (labels are ``0 .. num_classes - 1``).
        classes: class names, by label.
        train: the search split, the images a candidate trains on.
        heldout: the held-out split carved from the training set (or the dataset's own, for a
            generated one), where accuracy is measured.
        test: the test split: the dataset's official one, or carved from the training set
            (:attr:`test_carved`); reported, never used by a search decision.
        in_memory: the images are tensors in memory, already at ``image_size``: reading one
            costs almost nothing, so loaders use no worker processes by default.
        seed: the seed the split was carved with.
        heldout_fraction: the fraction of the images held out (for a dataset with its own
            held-out split, its share of all the images).
        test_carved: the test split was carved from the training set (the dataset has no
            official one).
    """

    name: str
    image_size: int
    num_classes: int
    classes: tuple[str, ...]
    train: Dataset
    heldout: Dataset
    test: Dataset | None
    in_memory: bool
    seed: int
    heldout_fraction: float
    test_carved: bool = False

    def default_workers(self) -> int:
        """Worker processes worth using: none for in-memory data, else up to 4 spare CPUs."""
        return 0 if self.in_memory else max(0, min(4, available_cpus() - 1))

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        num_workers: int | None,
        drop_last: bool,
        pin_memory: bool,
        sampler: Sampler | None = None,
    ) -> DataLoader:
        check_int("batch_size", batch_size, 1, DataError)
        workers = self.default_workers() if num_workers is None else num_workers
        check_int("num_workers", workers, 0, DataError)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            # A seeded generator makes the shuffle order (and worker seeds) reproducible.
            generator=torch.Generator().manual_seed(seed),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=pin_memory,
            drop_last=drop_last,
        )

    def train_loader(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        num_workers: int | None = None,
        pin_memory: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> DataLoader:
        """Shuffled batches of the search split, in an order fixed by ``seed``.

        The last incomplete batch is dropped, so every step has the same shape as the timed step
        and BatchNorm never sees a batch of one.

        With ``shard=(rank, world_size)`` the loader yields this data-parallel worker's share of
        every batch of ``batch_size`` (the global batch): a ``DistributedSampler`` permutes the
        split by ``seed`` alike on every worker and hands worker ``rank`` every
        ``world_size``-th image of it, in batches of ``batch_size // world_size``, so that the
        workers' ``k``-th batches together are the ``k``-th ``batch_size`` images of that one
        permutation, whatever ``world_size`` (1 included) is. Worker processes of the loader are
        seeded by :func:`shard_seed` ``(seed, rank)``.

        Raises:
            DataError: ``batch_size`` is not positive or is larger than the search split, or
                not divisible by ``world_size``.
        """
        if isinstance(batch_size, int) and batch_size > len(self.train):
            raise DataError(
                f"batch_size {batch_size} is larger than the search split of {self.name} "
                f"({len(self.train)} images)"
            )
        if shard is None:
            sampler, shuffle, loader_seed, worker_batch = None, True, seed, batch_size
        else:
            rank, world_size = shard
            if batch_size % world_size:
                raise DataError(
                    f"batch_size {batch_size} is not divisible by the {world_size} workers"
                )
            # drop_last: every worker gets floor(n / world_size) images, so each yields
            # floor(n / batch_size) full batches, as one process does.
            sampler = DistributedSampler(
                self.train, world_size, rank, shuffle=True, seed=seed, drop_last=True
            )
            shuffle, loader_seed, worker_batch = (
                None,
                shard_seed(seed, rank),
                batch_size // world_size,
            )
        return self._loader(
            self.train,
            worker_batch,
            shuffle=shuffle,
            seed=loader_seed,
            num_workers=num_workers,
            drop_last=True,
            pin_memory=pin_memory,
            sampler=sampler,
        )

    def heldout_loader(
        self, batch_size: int, *, num_workers: int | None = None, pin_memory: bool = False
    ) -> DataLoader:
        """Batches of the held-out split, in a fixed order, every image once."""
        return self._in_order(self.heldout, batch_size, num_workers, pin_memory)

    def test_loader(
        self, batch_size: int, *, num_workers: int | None = None, pin_memory: bool = False
    ) -> DataLoader:
        """Batches of the test split, in a fixed order, every image once.

        Raises:
            DataError: the bundle has no test split.
        """
        if self.test is None:
            raise DataError(f"dataset {self.name} has no test split")
        return self._in_order(self.test, batch_size, num_workers, pin_memory)

    def _in_order(
        self, dataset: Dataset, batch_size: int, num_workers: int | None, pin_memory: bool
    ) -> DataLoader:
        return self._loader(
            dataset,
            batch_size,
            shuffle=False,
            seed=0,
            num_workers=num_workers,
            drop_last=False,
            pin_memory=pin_memory,
        )

    def describe(self) -> str:
        """One line: name, split sizes, classes, image size."""
        carved = " (carved)" if self.test_carved else ""
        test = f", {len(self.test):,} test{carved}" if self.test is not None else ""
        return (
            f"{self.name}: {len(self.train):,} search / {len(self.heldout):,} held-out images"
            f"{test}, {self.num_classes} classes, {self.image_size} px"
        )


def load_dataset(
    name_spec: str,
    image_size: int,
    *,
    seed: int = 0,
    heldout_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_train_images: int | None = None,
    train_augment: Callable[[Any], Any] | None = None,
    train_crop: str = "none",
) -> DataBundle:
    """Load a dataset from the registry and carve the search and held-out splits.

    Args:
        name_spec: ``NAME[:PATH]`` (see :mod:`nas.data.sources`), e.g. ``"imagefolder:/data/x"``.
        image_size: side of the square images the loaders yield.
        seed: fixes which training images are held out (same seed, same split).
        heldout_fraction: fraction of the training set held out for measuring accuracy, in
            (0, 1); at least one image is held out and at least one kept. Not used by a dataset
            that brings its own held-out split (``cluttered``).
        test_fraction: fraction of the training set carved as the test split, in (0, 1), when
            the dataset has no test split of its own; carved by ``seed`` with the held-out
            split, disjoint from it and from the search split.
        max_train_images: if given, keep only this many images (chosen by ``seed``) of the search
            split, for a cheaper search on a large dataset.
        train_augment: an optional transform applied to search-split images only, after
            resizing and before normalization; it receives and returns a uint8
            ``tv_tensors.Image`` of shape (3, image_size, image_size) (e.g. ``v2.RandAugment``).
        train_crop: ``none``: search-split images are resized whole, as held-out ones always
            are; ``random-resized``: each read is a new random crop (module docstring) resized
            to ``image_size``, before ``train_augment``, drawn from torch's global generator
            (a loader worker's own, seeded by the loader): a seeded epoch crops alike.

    Returns:
        The :class:`DataBundle`.

    Raises:
        DataError: unknown dataset, missing or wrong path, bad sizes or fractions.
    """
    check_int("image_size", image_size, 1, DataError)
    check_choice("train_crop", train_crop, TRAIN_CROPS, DataError)
    check_number("heldout_fraction", heldout_fraction, 0.0, 1.0, DataError, above=True, below=True)
    check_number("test_fraction", test_fraction, 0.0, 1.0, DataError, above=True, below=True)
    if heldout_fraction + test_fraction >= 1:
        raise DataError(
            f"heldout_fraction + test_fraction must leave images to search on, got "
            f"{heldout_fraction:g} + {test_fraction:g}"
        )
    if max_train_images is not None:
        check_int("max_train_images", max_train_images, 1, DataError)
    _, source = load_source(name_spec)
    total = len(source.train)
    carve_test = source.test is None
    least = 3 if carve_test and source.heldout is None else 2
    if total < least:
        raise DataError(
            f"dataset {name_spec}: needs at least {least} training images, found {total}"
        )
    if len(source.classes) < 2:
        raise DataError(
            f"dataset {name_spec}: needs at least 2 classes, found {len(source.classes)}"
        )
    train, test, own_heldout, prepare, ready = _prepared(source, image_size)
    search_source, search_prepare = (
        (train, prepare) if train_crop == "none" else _cropped(source, image_size)
    )
    finish = v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
         v2.ToPureTensor()]
    )  # fmt: skip
    test_view = None if test is None else _View(test, None, prepare, None, finish)
    if own_heldout is None:
        search_indices, heldout_indices, test_indices = _split(
            total, heldout_fraction, test_fraction if carve_test else 0.0, seed
        )
        heldout = _View(train, heldout_indices, prepare, None, finish)
        if carve_test:
            test_view = _View(train, test_indices, prepare, None, finish)
    else:
        # The source's own held-out images; every training image is searched on, in an order
        # fixed by the seed, so that max_train_images keeps a seeded random subset.
        search_indices = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        search_indices = search_indices.tolist()
        heldout = _View(own_heldout, None, prepare, None, finish)
        heldout_fraction = len(own_heldout) / (total + len(own_heldout))
    if max_train_images is not None:
        search_indices = search_indices[:max_train_images]
    return DataBundle(
        name=name_spec,
        image_size=image_size,
        num_classes=len(source.classes),
        classes=source.classes,
        train=_View(search_source, search_indices, search_prepare, train_augment, finish),
        heldout=heldout,
        test=test_view,
        in_memory=ready,
        seed=seed,
        heldout_fraction=float(heldout_fraction),
        test_carved=carve_test and test_view is not None,
    )


def _prepared(
    source: Source, image_size: int
) -> tuple[Dataset, Dataset | None, Dataset | None, Callable[[Any], Any], bool]:
    """The source's train, test and own held-out sets, how to bring one image to ``image_size``
    px, and whether every image is already at that size in memory."""
    train, test, heldout = source.train, source.test, source.heldout
    if not source.in_memory:
        # Files: decode (already RGB from read_image), shorter side to the size, centre square.
        prepare = v2.Compose(
            [v2.ToImage(), v2.RGB(), v2.Resize(image_size, antialias=True),
             v2.CenterCrop(image_size)]
        )  # fmt: skip
        return train, test, heldout, prepare, False
    if not isinstance(train, TensorImages):
        raise TypeError(f"an in-memory source must hold TensorImages, got {type(train).__name__}")
    if len(train) * 3 * image_size * image_size > _PRERESIZE_LIMIT_BYTES:
        resize = v2.Resize((image_size, image_size), antialias=True)
        return train, test, heldout, v2.Compose([tv_tensors.Image, resize, v2.RGB()]), False
    test, heldout = (
        part.resized(image_size) if isinstance(part, TensorImages) else part
        for part in (test, heldout)
    )
    return train.resized(image_size), test, heldout, tv_tensors.Image, True


def _cropped(source: Source, image_size: int) -> tuple[Dataset, Callable[[Any], Any]]:
    """The source's training images at their own resolution, and how to cut one random-resized
    crop of ``image_size`` px from one (cropped before any resizing, as the reference code does,
    so that a small crop keeps the detail the image has)."""
    crop = v2.RandomResizedCrop(image_size, scale=CROP_AREA, ratio=CROP_ASPECT, antialias=True)
    if source.in_memory:
        # Crop the (often 1-channel) tensor first: the channel copy then costs the small image.
        return source.train, v2.Compose([tv_tensors.Image, crop, v2.RGB()])
    return source.train, v2.Compose([v2.ToImage(), v2.RGB(), crop])


def _split(
    total: int, heldout_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Search, held-out and test indices of ``total`` images, carved by ``seed``; each carved
    part holds at least one image when its fraction is positive, and the search keeps one."""

    def count(fraction: float) -> int:
        return 0 if fraction == 0 else max(1, math.floor(total * fraction + 0.5))

    heldout_count = min(total - 1, count(heldout_fraction))
    test_count = min(total - 1 - heldout_count, count(test_fraction))
    lengths = [total - heldout_count - test_count, heldout_count, test_count]
    # random_split with a seeded generator: the same seed carves the same split on any machine;
    # with no test part the search and held-out parts are those of a two-way split.
    search, heldout, test = random_split(range(total), lengths, torch.Generator().manual_seed(seed))
    return list(search.indices), list(heldout.indices), list(test.indices)
