"""Data sets held as tensors and batched by indexing.

MNIST, Fashion-MNIST and CIFAR-10 are read through torchvision's own dataset classes (so the
real download path is the one used), then kept whole as uint8 tensors on the training device.
A batch is one indexing operation plus a cast: no worker processes, no per-image PIL work.
Augmentation that can run on a whole batch does (see ``random_crop`` and ``random_flip``).

    train_loader, test_loader = data.fashion_mnist(batch_size=256)
    for x, y in train_loader: ...      # x: float (N, 1, 28, 28) in [0, 1], y: int64 (N,)
Taught in: chapters/00_introduction/01_the_course.ipynb and chapters/01_mlp/04_fashion_mnist.ipynb.
"""
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from . import config
from ._validate import _is_int, positive_int

FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

# Per-channel mean and std of each training set, for normalize=True.
STATS = {
    "MNIST": ((0.1307,), (0.3081,)),
    "FashionMNIST": ((0.2860,), (0.3530,)),
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

_FILES = {
    "MNIST": ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    "CIFAR10": ["cifar-10-batches-py/data_batch_1 ... data_batch_5", "cifar-10-batches-py/test_batch"],
}
_FILES["FashionMNIST"] = _FILES["MNIST"]
_CLASSES = {"MNIST": torchvision.datasets.MNIST, "FashionMNIST": torchvision.datasets.FashionMNIST,
            "CIFAR10": torchvision.datasets.CIFAR10}


class DatasetNotFoundError(FileNotFoundError):
    """The data set is not on disk and could not be downloaded."""


def _not_found(name, root, why):
    folder = Path(root) / (name if name != "CIFAR10" else "")
    if name != "CIFAR10":
        folder = folder / "raw"
    files = "\n".join(f"  {folder / f}" for f in _FILES[name])
    return DatasetNotFoundError(
        f"{name} is not in {folder} ({why}).\nPut these files there (gzipped .gz files are fine "
        f"for MNIST-style sets when a download is allowed):\n{files}\n"
        f"or point $CNNLIB_DATA at the folder that holds {name}/ (now: {root}).")


def _download_failed(err):
    """Downloads are on and the files are absent: the network is the problem, not the files."""
    last_line = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return f"downloads are on, but the download failed, which usually means this machine has no network: {last_line}"


class DatasetCorruptError(RuntimeError):
    """A data set file is on disk but cannot be read (truncated download, wrong file)."""


def canonical_name(name):
    """'mnist', 'Fashion-MNIST', 'cifar_10' -> the data set's name as torchvision spells it."""
    key = str(name).lower().replace("-", "").replace("_", "").replace(" ", "")
    for known in _CLASSES:
        if known.lower() == key:
            return known
    raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(_CLASSES)} (any case)")


def _corrupt(name, root, train, err):
    """Name the file that cannot be read, and how to replace it."""
    folder = Path(root) / name / "raw" if name != "CIFAR10" else Path(root) / "cifar-10-batches-py"
    bad = folder
    if name != "CIFAR10":
        from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor
        prefix = "train" if train else "t10k"
        for f in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
            try:
                read_sn3_pascalvincent_tensor(str(folder / f))
            except Exception:
                bad = folder / f
                break
    return DatasetCorruptError(
        f"{name}: {bad} is corrupt (truncated or not the right file: {type(err).__name__} {err}). "
        f"Delete it and run again with downloads allowed (CNNLIB_DOWNLOAD=1) to fetch a fresh copy, "
        f"or copy a good one there from a machine that has it.")


def load(name, train=True, root=None):
    """The whole split of a data set as (uint8 images N x C x H x W, int64 labels N)."""
    name = canonical_name(name)
    root = Path(root or config.data_root()).expanduser()
    download = config.download_allowed()
    try:
        ds = _CLASSES[name](str(root), train=train, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True"
        if str(err).startswith("Error downloading"):   # MNIST-style: every mirror failed
            raise _not_found(name, root, _download_failed(err)) from err
        if "not found" not in str(err).lower():
            raise _corrupt(name, root, train, err) from err
        raise _not_found(name, root, "downloads are off: CNNLIB_DOWNLOAD=0" if not download
                         else f"it could not be read: {err}") from err
    except OSError as err:  # offline: urllib errors, refused connections
        raise _not_found(name, root, _download_failed(err)) from err
    except (AssertionError, ValueError, KeyError, IndexError, EOFError, pickle.UnpicklingError) as err:
        raise _corrupt(name, root, train, err) from err
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return images.contiguous(), labels


def _check_resize(resize):
    """None, a positive side, or a positive (height, width)."""
    if resize is None:
        return None
    sides = (resize,) if _is_int(resize) else tuple(resize) if isinstance(resize, (tuple, list)) else ()
    if not (len(sides) in (1, 2) and all(_is_int(v) and v > 0
                                         for v in sides)):
        raise ValueError(f"resize must be None, a positive side or a (height, width) of positive sides, got {resize!r}")
    return resize


def _check_size(name, size):
    if size is not None:
        positive_int(name, size, also=" (or None for the whole split)")


class TensorLoader:
    """Batches of a data set held whole as a tensor on one device.

    Each epoch reshuffles with a seed derived from (seed, epoch), so a resumed run sees the same
    batches as an uninterrupted one. With ``drop_last`` every batch has the same shape (the
    leftover examples of one epoch are seen in others, as the order changes every epoch).
    Under data parallelism each rank takes every world_size-th example of the permutation,
    as ``DistributedSampler`` does.
    """

    def __init__(self, images, labels, batch_size, *, shuffle=False, drop_last=False, device=None,
                 normalize=None, resize=None, augment=(), seed=0):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device or config.device())
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.resize, self.augment, self.seed = _check_resize(resize), tuple(augment), seed
        self.mean = self.std = None
        if normalize is not None:
            mean, std = normalize
            self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
            self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.epoch, self.rank, self.world_size = 0, 0, 1

    def shard(self, rank, world_size):
        """Keep only this rank's share of every epoch (data-parallel training)."""
        self.rank, self.world_size = rank, world_size
        return self

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _rank_size(self):  # every rank the same share, so every rank takes the same number of steps
        return -(-len(self.labels) // self.world_size)

    @property
    def num_examples(self):
        """Examples this rank sees in one epoch."""
        n = self._rank_size()
        return n - n % self.batch_size if self.drop_last else n

    def __len__(self):
        n = self._rank_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _indices_of_rank(self, order):
        """This rank's share. Ranks must take equal numbers of steps (an extra step on one rank
        waits forever for the others' gradients), so an epoch that does not split evenly is padded
        with its first examples, as torch's DistributedSampler does."""
        padding = self._rank_size() * self.world_size - len(order)
        if padding:
            order = torch.cat([order, order[:padding]])
        return order[self.rank::self.world_size]

    def _order(self):
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n, device=self.device)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(n, generator=g).to(self.device)

    def __iter__(self):
        order = self._indices_of_rank(self._order())
        g = None
        if self.augment:  # one generator per epoch, on the data's device
            g = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + self.epoch + 1)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.prepare(self.images[idx], g), self.labels[idx]

    def prepare(self, images, generator=None):
        """Images (uint8 0..255, or already float) -> float in [0, 1], resized, augmented, normalised."""
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        if self.resize:
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False)
        for aug in self.augment:
            x = aug(x, generator)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


def _subset(images, labels, size, seed):
    if size is None or size >= len(labels):
        return images, labels
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:size]
    return images[keep], labels[keep]


def loaders(name, batch_size=256, *, train_size=None, test_size=None, resize=None,
            normalize=False, augment=(), device=None, root=None, seed=0, eval_batch_size=1024):
    """(train_loader, test_loader) for MNIST, FashionMNIST or CIFAR10 (any case: "mnist" works).

    train_size / test_size take a fixed random subset (the same for a given seed); the
    training loader reshuffles every epoch and drops the last partial batch, so every step
    has the same shape; the test loader covers every test example.
    """
    name = canonical_name(name)
    _check_size("train_size", train_size), _check_size("test_size", test_size), _check_resize(resize)
    norm = STATS[name] if normalize else None
    train = _subset(*load(name, True, root), train_size, seed)
    test = _subset(*load(name, False, root), test_size, seed)
    common = dict(device=device, normalize=norm, resize=resize, seed=seed)
    return (TensorLoader(*train, batch_size, shuffle=True, drop_last=True, augment=augment, **common),
            TensorLoader(*test, max(batch_size, eval_batch_size), **common))


def mnist(batch_size=256, **kwargs):
    return loaders("MNIST", batch_size, **kwargs)


def fashion_mnist(batch_size=256, **kwargs):
    return loaders("FashionMNIST", batch_size, **kwargs)


def cifar10(batch_size=128, **kwargs):
    return loaders("CIFAR10", batch_size, **kwargs)


# Batched augmentation: each takes a float batch (N, C, H, W) and a generator, returns a batch.

def random_flip(p=0.5):
    """Mirror each image left-right with probability p."""
    def flip(x, g):
        mask = torch.rand(len(x), generator=g, device=x.device) < p
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
    return flip


def random_crop(padding=4):
    """Pad by `padding` zeros, then cut each image back to its size at a random offset."""
    def crop(x, g):
        n, c, h, w = x.shape
        padded = F.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), generator=g, device=x.device)
        dx = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), generator=g, device=x.device)
        rows = dy + torch.arange(h, device=x.device).view(1, 1, h, 1)   # (n, 1, h, 1)
        cols = dx + torch.arange(w, device=x.device).view(1, 1, 1, w)   # (n, 1, 1, w)
        picked_rows = padded.gather(2, rows.expand(n, c, h, padded.shape[3]))
        return picked_rows.gather(3, cols.expand(n, c, h, w))
    return crop
