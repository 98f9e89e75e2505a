"""Cluttered MNIST: deterministic, search / held-out / test digits disjoint, loads and learns."""

from __future__ import annotations

import pytest
import torch

from nas.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset
from nas.data.cluttered import cluttered_mnist
from nas.data.sources import _mnist5k_arrays
from nas.errors import DataError

SMALL = {"num_search": 300, "num_heldout": 200, "num_test": 200}


@pytest.fixture(scope="module")
def real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    return _mnist5k_arrays()


@pytest.fixture(scope="module")
def default_splits(real_digits):
    """The splits exactly as the registry's ``cluttered`` generates them."""
    return cluttered_mnist(*real_digits, seed=0)


def _flat_digits(classes: int = 2, per_class: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits that are flat squares, each of its own grey level (1, 2, ...): a pixel names it."""
    count = classes * per_class
    values = torch.arange(1, count + 1, dtype=torch.uint8)
    digits = values.view(count, 1, 1).expand(count, 28, 28).contiguous()
    return digits, torch.arange(count) % classes


def test_same_seed_same_bytes_other_seed_other_images(real_digits):
    first = cluttered_mnist(*real_digits, seed=3, **SMALL)
    again = cluttered_mnist(*real_digits, seed=3, **SMALL)
    other = cluttered_mnist(*real_digits, seed=4, **SMALL)
    for mine, same, different in zip(first, again, other, strict=True):
        assert torch.equal(mine.images, same.images)
        assert torch.equal(mine.labels, same.labels)
        assert torch.equal(mine.clutter_index, same.clutter_index)
        assert not torch.equal(mine.images, different.images)
    # Another seed also holds out other source digits.
    assert first[1].source_digits() != other[1].source_digits()
    assert first[2].source_digits() != other[2].source_digits()


def test_search_heldout_and_test_source_digits_are_disjoint_clutter_included(default_splits):
    search, heldout, test = default_splits
    assert not search.source_digits() & heldout.source_digits()
    assert not search.source_digits() & test.source_digits()
    assert not heldout.source_digits() & test.source_digits()
    # The held-out and the test images each draw on exactly 100 digits per class (1,000), the
    # search images on the other 3,000, each as a digit; clutter never brings in a digit of
    # another split.
    assert len(set(heldout.digit_index.tolist())) == 1000
    assert len(set(test.digit_index.tolist())) == 1000
    assert len(set(search.digit_index.tolist())) == 3000
    for split in default_splits:
        assert set(split.clutter_index.flatten().tolist()) <= set(split.digit_index.tolist())


def test_test_seed_changes_the_test_images_alone(real_digits):
    base = cluttered_mnist(*real_digits, seed=3, **SMALL)
    moved = cluttered_mnist(*real_digits, seed=3, test_seed=11, **SMALL)
    for mine, other in zip(base[:2], moved[:2], strict=True):
        assert torch.equal(mine.images, other.images)
        assert torch.equal(mine.digit_index, other.digit_index)
    assert not torch.equal(base[2].images, moved[2].images)
    # The same digits are reserved for testing; only how they are drawn and placed moves.
    assert set(base[2].digit_index.tolist()) <= set(moved[2].source_digits()) | set(
        base[2].digit_index.tolist()
    )
    assert base[2].source_digits() & moved[2].source_digits()
    assert not moved[2].source_digits() & (base[0].source_digits() | base[1].source_digits())


def test_recorded_sources_are_the_pixels_drawn():
    # Each flat "digit" has its own grey level and fragments are composed by the maximum, so the
    # brightest pixel of an image is the brightest of the digits it records using: a wrong
    # digit_index or clutter_index would show.
    digits, labels = _flat_digits()
    settings = {
        "canvas": 40,
        "scale": (1.0, 1.0),
        "patch": 6,
        "heldout_per_class": 30,
        "test_per_class": 30,
    }
    for clutter in (0, 4):
        for split in cluttered_mnist(digits, labels, seed=1, clutter=clutter, **SMALL, **settings):
            used = torch.cat([split.digit_index.view(-1, 1), split.clutter_index], dim=1)
            brightest = digits.view(len(digits), -1)[:, 0][used].amax(dim=1)
            assert torch.equal(split.images.amax(dim=(1, 2, 3)), brightest)
            assert torch.equal(split.labels, labels[split.digit_index])
    search, heldout, test = cluttered_mnist(digits, labels, seed=1, clutter=4, **SMALL, **settings)
    assert not search.source_digits() & heldout.source_digits()
    assert not test.source_digits() & (search.source_digits() | heldout.source_digits())


def test_a_digit_at_scale_one_on_its_own_canvas_is_copied_exactly(real_digits):
    digits, labels = real_digits
    search, _, _ = cluttered_mnist(
        digits, labels, seed=0, canvas=28, scale=(1.0, 1.0), clutter=0, **SMALL
    )
    assert torch.equal(search.images, digits[search.digit_index])


def test_shapes_dtypes_and_balance(default_splits):
    search, heldout, test = default_splits
    assert search.images.shape == (5_000, 1, 36, 36) and search.images.dtype == torch.uint8
    for split in (heldout, test):
        assert split.images.shape == (4_000, 1, 36, 36) and split.images.dtype == torch.uint8
        assert torch.equal(torch.bincount(split.labels), torch.full((10,), 400))
        # Every digit is used equally often: 4,000 images from 1,000 digits, 4 times each.
        uses = torch.bincount(split.digit_index)
        assert set(uses[uses > 0].tolist()) == {4}
    assert search.labels.dtype == torch.int64 and search.clutter_index.shape == (5_000, 3)
    assert torch.equal(torch.bincount(search.labels), torch.full((10,), 500))
    # 5,000 search images from 3,000 digits, once or twice each.
    uses = torch.bincount(search.digit_index)
    assert set(uses[uses > 0].tolist()) == {1, 2}
    # The images hold ink (a digit and clutter), not an empty canvas.
    assert (search.images.flatten(1).amax(dim=1) > 200).all()
    assert 0.05 < (heldout.images > 127).float().mean() < 0.4


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("patch", 29, "patch must be at most"),
        ("canvas", 20, "canvas must hold the largest scaled digit"),
        ("num_search", 0, "num_search must be an integer of at least 1"),
        ("scale", (0.9, 0.5), "scale high must be at least 0.9"),
        ("heldout_per_class", 400, "class 0 has 500 source digits, not more than the 500"),
        ("num_test", 0, "num_test must be an integer of at least 1"),
    ],
)
def test_bad_settings_name_the_setting(real_digits, setting, value, message):
    with pytest.raises(DataError, match=message):
        cluttered_mnist(*real_digits, **{**SMALL, setting: value})


def test_loads_through_the_registry_with_its_own_heldout_and_test_splits(default_splits):
    search, heldout, test = default_splits
    data = load_dataset("cluttered", 36, seed=5, max_train_images=2000)
    assert (len(data.train), len(data.heldout), data.num_classes) == (2000, 4000, 10)
    assert data.in_memory and len(data.test) == 4000 and not data.test_carved
    assert data.heldout_fraction == pytest.approx(4000 / 9000)
    assert torch.equal(torch.tensor([data.test[i][1] for i in range(50)]), test.labels[:50])
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    # At the canvas size nothing is resampled: the held-out images are the generated ones, in
    # order, and the search images are the generated search images chosen by the seed.
    for position in (0, 3999):
        image, label = data.heldout[position]
        pixels = (image * std + mean) * 255
        torch.testing.assert_close(
            pixels, heldout.images[position].expand(3, 36, 36).float(), atol=1e-3, rtol=0
        )
        assert label == heldout.labels[position]
    index = data.train.indices[0]
    assert data.train[0][1] == search.labels[index]
    again = load_dataset("cluttered", 36, seed=5, max_train_images=2000)
    assert data.train.indices == again.train.indices
    assert data.train.indices != load_dataset("cluttered", 36, seed=6).train.indices[:2000]
    # All 5,000 search images, once each, when nothing caps them.
    assert sorted(load_dataset("cluttered", 24, seed=5).train.indices) == list(range(5000))


def test_datasets_without_a_test_split_carve_heldout_and_test_by_seed():
    data = load_dataset("synthetic:100", 16, seed=0, heldout_fraction=0.2, test_fraction=0.1)
    assert (len(data.train), len(data.heldout), len(data.test)) == (70, 20, 10)
    assert data.test_carved and "10 test (carved)" in data.describe()
    assert data.heldout.source is data.train.source is data.test.source
    parts = [set(data.train.indices), set(data.heldout.indices), set(data.test.indices)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert parts[0] | parts[1] | parts[2] == set(range(100))
    again = load_dataset("synthetic:100", 16, seed=0, heldout_fraction=0.2, test_fraction=0.1)
    assert again.test.indices == data.test.indices and again.train.indices == data.train.indices
    other = load_dataset("synthetic:100", 16, seed=1, heldout_fraction=0.2, test_fraction=0.1)
    assert other.test.indices != data.test.indices


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ({"test_fraction": 0.0}, "test_fraction must be"),
        ({"test_fraction": 1.0}, "test_fraction must be"),
        ({"heldout_fraction": 0.5, "test_fraction": 0.5}, "must leave images to search on"),
    ],
)
def test_bad_test_fraction_is_refused(fractions, message):
    with pytest.raises(DataError, match=message):
        load_dataset("synthetic:100", 16, **fractions)


def test_a_small_net_learns_above_chance(tiny_spec):
    from nas.evaluate import EvalConfig, evaluate_candidate

    config = EvalConfig(
        dataset="cluttered",
        image_size=24,
        epochs=2,
        batch_size=64,
        max_train_images=2000,
        device="cpu",
        timing_steps=1,
        timing_warmup=0,
        reference=tiny_spec.to_string(),
    )
    # One thread, as a search trial runs: with two, OpenMP's threads wait on each other whenever
    # another process takes a core, and this run takes ten times longer on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = evaluate_candidate(tiny_spec, config)
    finally:
        torch.set_num_threads(threads)
    # Ten balanced classes: chance is 10%, and on 4,000 held-out images a guess scores within
    # 1.5 points of it (3 standard errors); this run reaches about 24%.
    assert result.ok and result.accuracy > 0.15
