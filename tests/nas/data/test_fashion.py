"""Fashion-MNIST: the IDX reader, against the Debian package's files and against small files
written here, the splits, and the message when the package is missing."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.data import load_dataset
from nas.data.sources import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_source, read_idx
from nas.errors import DataError
from nas.search.config import SearchConfig
from tests import REPO

needs_package = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} "
    "(apt-get install dataset-fashion-mnist; CI installs it)",
)

#: The first ten training labels, as Fashion-MNIST's README and every tutorial print them.
FIRST_TRAINING_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def _gunzipped(name: str) -> bytes:
    return gzip.decompress((FASHION_MNIST_DIR / f"{name}.gz").read_bytes())


def _idx_bytes(magic: int, shape: tuple[int, ...], data: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in shape)
    return header + data


def _write_split(
    root: Path,
    prefix: str,
    count: int,
    *,
    label_count: int | None = None,
    size: int = 28,
    label_value: int | None = None,
    compress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """IDX files of ``count`` random images and labels under ``root``; returns what they hold."""
    rng = np.random.default_rng(count)
    images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
    labels_held = count if label_count is None else label_count
    labels = rng.integers(0, 10, labels_held, dtype=np.uint8)
    if label_value is not None:
        labels[-1] = label_value
    root.mkdir(parents=True, exist_ok=True)
    files = {
        f"{prefix}-images-idx3-ubyte": _idx_bytes(0x803, images.shape, images.tobytes()),
        f"{prefix}-labels-idx1-ubyte": _idx_bytes(0x801, labels.shape, labels.tobytes()),
    }
    for name, content in files.items():
        if compress:
            (root / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (root / name).write_bytes(content)
    return images, labels


# -- the installed package ----------------------------------------------------------------------


@needs_package
def test_reader_agrees_with_the_files_own_headers_and_the_published_labels():
    for prefix, count in (("train", 60000), ("t10k", 10000)):
        images_raw = _gunzipped(f"{prefix}-images-idx3-ubyte")
        labels_raw = _gunzipped(f"{prefix}-labels-idx1-ubyte")
        # The headers, read independently: magic, then the big-endian sizes.
        assert np.frombuffer(images_raw[:16], ">u4").tolist() == [0x803, count, 28, 28]
        assert np.frombuffer(labels_raw[:8], ">u4").tolist() == [0x801, count]
        images = read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz", 0x803)
        labels = read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz", 0x801)
        assert images.shape == (count, 28, 28) and labels.shape == (count,)
        expected_labels = np.frombuffer(labels_raw, np.uint8, offset=8)
        np.testing.assert_array_equal(labels[:20], expected_labels[:20])
        np.testing.assert_array_equal(labels[-5:], expected_labels[-5:])
        last_image = np.frombuffer(images_raw, np.uint8, offset=16)[-784:].reshape(28, 28)
        np.testing.assert_array_equal(images[-1], last_image)
    train_labels = read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz", 0x801)
    assert train_labels[:10].tolist() == FIRST_TRAINING_LABELS
    assert np.bincount(train_labels).tolist() == [6000] * 10  # balanced, as published


@needs_package
def test_registry_source_holds_the_training_and_official_test_images():
    name, source = load_source("fashionmnist")
    assert name == "fashionmnist" and source.in_memory and source.heldout is None
    assert (len(source.train), len(source.test)) == (60000, 10000)
    assert source.classes == FASHION_MNIST_CLASSES and source.classes[9] == "Ankle boot"
    image, label = source.train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8
    assert label == FIRST_TRAINING_LABELS[0]
    # The explicit path is the same data as the default.
    _, again = load_source(f"fashionmnist:{FASHION_MNIST_DIR}")
    assert torch.equal(again.test.labels, source.test.labels)


@needs_package
def test_splits_carve_heldout_from_training_by_seed_and_keep_the_official_test_apart():
    data = load_dataset("fashionmnist", 28, seed=5, heldout_fraction=0.1, max_train_images=1000)
    again = load_dataset("fashionmnist", 28, seed=5, heldout_fraction=0.1, max_train_images=1000)
    other = load_dataset("fashionmnist", 28, seed=6, heldout_fraction=0.1, max_train_images=1000)
    assert (len(data.train), len(data.heldout), len(data.test)) == (1000, 6000, 10000)
    assert data.train.indices == again.train.indices
    assert data.heldout.indices == again.heldout.indices
    assert data.heldout.indices != other.heldout.indices
    assert not set(data.train.indices) & set(data.heldout.indices)
    assert all(0 <= i < 60000 for i in data.heldout.indices)
    _, source = load_source("fashionmnist")
    image, label = data.test[0]
    assert image.shape == (3, 28, 28) and label == int(source.test.labels[0]) == 9


# -- small files written here (no package needed) ------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_small_idx_files_gzipped_or_not(tmp_path, compress):
    train_images, train_labels = _write_split(tmp_path, "train", 30, compress=compress)
    test_images, test_labels = _write_split(tmp_path, "t10k", 12, compress=compress)
    _, source = load_source(f"fashionmnist:{tmp_path}")
    assert torch.equal(source.train.images[:, 0], torch.from_numpy(train_images))
    assert torch.equal(source.train.labels, torch.from_numpy(train_labels).long())
    assert torch.equal(source.test.images[:, 0], torch.from_numpy(test_images))
    assert torch.equal(source.test.labels, torch.from_numpy(test_labels).long())
    data = load_dataset(f"fashionmnist:{tmp_path}", 16, seed=0, heldout_fraction=0.2)
    assert (len(data.train), len(data.heldout), len(data.test)) == (24, 6, 12)


def _broken(root: Path, case: str) -> Path:
    """A directory of Fashion-MNIST files with one fault; returns the faulty file."""
    _write_split(root, "train", 20)
    _write_split(root, "t10k", 10)
    images = root / "train-images-idx3-ubyte.gz"
    labels = root / "train-labels-idx1-ubyte.gz"
    if case == "bad magic":
        content = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress((0x801).to_bytes(4, "big") + content[4:]))
        return images
    if case == "truncated data":
        content = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(content[:-100]))
        return images
    if case == "truncated gzip":
        images.write_bytes(images.read_bytes()[:-30])
        return images
    if case == "count mismatch":
        _write_split(root, "train", 20, label_count=19)
        return labels
    if case == "label out of range":
        _write_split(root, "train", 20, label_value=10)
        return labels
    if case == "wrong image size":
        _write_split(root, "train", 20, size=32)
        return images
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("bad magic", "magic 0x00000801, expected 0x00000803"),
        ("truncated data", "its header (20, 28, 28) says 15680"),
        ("truncated gzip", "cannot be read"),
        ("count mismatch", "19 labels for the 20 images"),
        ("label out of range", "label 10"),
        ("wrong image size", "32x32 images"),
    ],
)
def test_a_wrong_file_is_a_one_line_error_naming_it(tmp_path, case, words):
    faulty = _broken(tmp_path, case)
    with pytest.raises(DataError) as caught:
        load_source(f"fashionmnist:{tmp_path}")
    message = str(caught.value)
    assert words in message and str(faulty) in message and "\n" not in message


def test_a_missing_file_names_it_and_the_package(tmp_path):
    _write_split(tmp_path, "train", 20)
    with pytest.raises(DataError, match=r"no t10k-images-idx3-ubyte.*dataset-fashion-mnist"):
        load_source(f"fashionmnist:{tmp_path}")


def test_missing_package_names_it_and_exits_2_through_the_cli(tmp_path, capsys, monkeypatch):
    """Without Debian's package (its folder missing), ``--dataset fashionmnist`` says what to
    install; an explicit missing PATH is refused as any missing path is, when parsing."""
    import nas.data.sources as sources

    missing = tmp_path / "nowhere"
    monkeypatch.setattr(sources, "FASHION_MNIST_DIR", missing)
    assert main(["evaluate", "efficientnetv2-b0", "--dataset", "fashionmnist"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(missing) in err and "apt-get install dataset-fashion-mnist" in err
    assert main(["evaluate", "efficientnetv2-b0", "--dataset", f"fashionmnist:{missing}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dataset" in err and str(missing) in err


def test_the_shipped_fashion_search_config_suits_28_px_on_two_cpu_cores():
    config = SearchConfig.load(REPO / "configs" / "fashion.yaml")
    assert config.dataset == "fashionmnist" and config.image_size == 28
    assert (config.concurrent, config.resources.cpus, config.resources.gpus) == (2, 1, 0)
    assert config.evaluation["timing_clock"] == "cpu"
    assert config.evaluation["max_train_images"] <= 10000
    # Every net of the space ends on a 4x4 map at 28 px (the stem and two stages halve it).
    for seed in range(5):
        spec = config.space.sample(random.Random(seed))
        assert spec.total_stride == 8 and spec.train_resolution == spec.eval_resolution == 28
