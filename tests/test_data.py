import pickle

import numpy as np
import pytest
import torch

from cnnlib import config, data


def test_data_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLIB_DATA", str(tmp_path))
    assert config.data_root() == tmp_path
    monkeypatch.delenv("CNNLIB_DATA")
    assert config.data_root().parts[-3:] == (".cache", "cnnlib", "data")


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "CIFAR10"])
def test_missing_data_set_says_where_to_put_it(monkeypatch, tmp_path, name):
    monkeypatch.setenv("CNNLIB_DOWNLOAD", "0")
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load(name, root=tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "CNNLIB_DATA" in message
    assert ("train-images-idx3-ubyte" if name != "CIFAR10" else "data_batch_1") in message


def test_fashion_mnist_loads_as_tensors():
    images, labels = data.load("FashionMNIST", train=False)
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10_000,) and set(labels.unique().tolist()) == set(range(10))


def _fake_cifar(root, n=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES)}, f)


def test_cifar10_loader_on_small_made_up_data(monkeypatch, tmp_path):
    import torchvision.datasets.cifar as cifar
    _fake_cifar(tmp_path)
    # The made-up files cannot match torchvision's MD5 sums; everything after that check is real.
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    train, test = data.cifar10(batch_size=10, root=tmp_path, device="cpu", augment=(data.random_flip(),))
    x, y = next(iter(train))
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert len(train) == 10 and train.num_examples == 100 and test.num_examples == 20


def test_loader_static_batches_and_reshuffles_every_epoch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    loader = data.TensorLoader(images, torch.arange(10), 4, shuffle=True, drop_last=True, device="cpu")
    assert len(loader) == 2 and loader.num_examples == 8
    epoch0 = [y.tolist() for _, y in loader]
    assert all(len(b) == 4 for b in epoch0)
    loader.set_epoch(1)
    epoch1 = [y.tolist() for _, y in loader]
    assert epoch0 != epoch1
    loader.set_epoch(0)
    assert [y.tolist() for _, y in loader] == epoch0  # the same seed and epoch give the same order


def test_test_loader_covers_every_example():
    loader = data.TensorLoader(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10), 4, device="cpu")
    assert [len(y) for _, y in loader] == [4, 4, 2]


def test_shards_together_cover_the_global_batches():
    images, labels = torch.zeros(16, 1, 1, 1, dtype=torch.uint8), torch.arange(16)
    whole = data.TensorLoader(images, labels, 4, shuffle=True, drop_last=True, device="cpu")
    shards = [data.TensorLoader(images, labels, 2, shuffle=True, drop_last=True, device="cpu").shard(r, 2)
              for r in range(2)]
    for (_, y), (_, y0), (_, y1) in zip(whole, *shards):
        assert sorted(y.tolist()) == sorted(y0.tolist() + y1.tolist())


@pytest.mark.parametrize("n, batch", [(9, 4), (10, 5), (7, 2), (3, 4)])
def test_uneven_shards_take_the_same_number_of_steps(n, batch):
    """One extra step on one rank would wait forever for the others under DDP (gpu_review 4.2)."""
    images, labels = torch.zeros(n, 1, 1, 1, dtype=torch.uint8), torch.arange(n)
    shards = [data.TensorLoader(images, labels, batch, shuffle=True, device="cpu").shard(r, 2) for r in range(2)]
    steps = [len(list(s)) for s in shards]
    assert steps[0] == steps[1] == len(shards[0]) == len(shards[1])
    seen = torch.cat([y for s in shards for _, y in s])
    assert set(seen.tolist()) == set(range(n)) and len(seen) == 2 * -(-n // 2)   # padded as DistributedSampler


def test_batched_augmentation_keeps_shape_and_content():
    x = torch.rand(8, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    flipped = data.random_flip(p=1.0)(x, g)
    assert torch.equal(flipped, x.flip(3))
    cropped = data.random_crop(padding=2)(x, g)
    assert cropped.shape == x.shape
    # every crop is a shifted window of the zero-padded image
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(8):
        assert any(torch.equal(cropped[i], padded[i, :, dy:dy + 6, dx:dx + 6])
                   for dy in range(5) for dx in range(5))


def test_float_images_are_not_rescaled():
    x = torch.rand(6, 1, 2, 2)
    loader = data.TensorLoader(x, torch.arange(6), 3, device="cpu")
    assert torch.equal(next(iter(loader))[0], x[:3])


def _mnist_copy(root, truncate=None):
    import shutil
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in data._FILES["MNIST"]:
        shutil.copy(config.data_root() / "MNIST" / "raw" / f, raw / f)
    if truncate:
        path = raw / truncate
        path.write_bytes(path.read_bytes()[:1000])
    return raw


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_idx_file_is_named_and_how_to_replace_it_said(monkeypatch, tmp_path, damage):
    monkeypatch.setenv("CNNLIB_DOWNLOAD", "0")
    raw = _mnist_copy(tmp_path, truncate="t10k-images-idx3-ubyte" if damage == "truncated" else None)
    if damage == "garbage":
        (raw / "t10k-labels-idx1-ubyte").write_bytes(b"hello")
        bad = "t10k-labels-idx1-ubyte"
    else:
        bad = "t10k-images-idx3-ubyte"
    with pytest.raises(data.DatasetCorruptError) as err:
        data.load("MNIST", train=False, root=tmp_path)
    message = str(err.value)
    assert f"{raw / bad} is corrupt" in message and "Delete it" in message and "CNNLIB_DOWNLOAD=1" in message


def test_loaders_take_any_spelling_of_a_name_and_list_the_choices(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLIB_DOWNLOAD", "0")
    with pytest.raises(data.DatasetNotFoundError, match="MNIST is not in"):
        data.loaders("mnist", root=tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match="FashionMNIST is not in"):
        data.loaders("fashion-mnist", root=tmp_path)
    with pytest.raises(ValueError, match="unknown data set 'cifar100'.*MNIST, FashionMNIST, CIFAR10"):
        data.loaders("cifar100", root=tmp_path)


@pytest.mark.parametrize("kwargs,message", [
    (dict(train_size=-5), "train_size must be a positive integer"),
    (dict(test_size=0), "test_size must be a positive integer"),
    (dict(resize=0), "resize must be"),
    (dict(resize=(28, -1)), "resize must be"),
])
def test_sizes_that_make_no_sense_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.loaders("FashionMNIST", **kwargs)
