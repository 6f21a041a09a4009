"""CIFAR-10 and STL-10 (labeled splits) as uint8 tensors, from torchvision or from a local .npz.

Two ways in, chosen by the ``data`` argument of :func:`load_dataset`:

* a **directory**: torchvision's dataset class reads (and, with ``download=True``, fetches)
  the official files there;
* a **.npz file** holding ``x_train, y_train, x_test, y_test`` as uint8 HWC images and integer
  labels, for machines without internet. For CIFAR-10 one is made from the copy beside this
  project with ``python ../shared/data/cifar10/unpack.py cifar10.npz``.

Either way the result is an :class:`ImageDataset` of uint8 NCHW tensors. Images stay uint8
until a batch is drawn (on the GPU when there is one: CIFAR-10's training set is 150 MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pagcore.base.validation import ConfigError, check_choice

DATASETS: tuple[str, ...] = ("cifar10", "stl10")


def as_float(samples: Tensor) -> Tensor:
    """Samples as floats: uint8 images become [0, 1] (the one conversion of the package), float data is
    returned as is."""
    if samples.dtype == torch.uint8:
        return samples.float().div_(255.0)
    return samples if samples.is_floating_point() else samples.float()


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    image_size: int
    num_classes: int
    train_size: int
    test_size: int
    class_names: tuple[str, ...]


SPECS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10",
        "CIFAR-10",
        32,
        10,
        50_000,
        10_000,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
    # STL-10's labeled splits: 500 training and 800 test images per class.
    "stl10": DatasetSpec(
        "stl10",
        "STL-10",
        96,
        10,
        5_000,
        8_000,
        ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
    ),
}


@dataclass
class ImageDataset:
    """A labeled image dataset held as tensors: images uint8 ``(N, 3, H, W)``, labels int64."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    class_names: tuple[str, ...]
    source: str  # where it was read from, for the run record
    test_index: Tensor | None = None  # positions in the official test set; None: the official order, all of it

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def test_set(self) -> str:
        """What the test images are, in words every number computed on them must carry."""
        spec, n = SPECS[self.name], len(self.y_test)
        if self.test_index is None and n == spec.test_size:
            return f"all {n:,} {spec.title} test images"
        counts = torch.bincount(self.y_test, minlength=self.num_classes)
        balanced = " class-balanced" if bool((counts == counts[0]).all()) else ""
        return f"{n:,}-image{balanced} subset of the {spec.title} test set"

    def subset(self, train: int | None = None, test: int | None = None) -> ImageDataset:
        """The first ``train`` / ``test`` images (for smoke tests), keeping everything else."""
        return ImageDataset(
            self.name,
            self.x_train[:train],
            self.y_train[:train],
            self.x_test[:test],
            self.y_test[:test],
            self.class_names,
            self.source + (f" (first {train} train / {test} test)" if train or test else ""),
            None if self.test_index is None else self.test_index[:test],
        )


def missing_data_message(name: str, data: Path) -> str:
    if name == "cifar10":
        how = (
            "  * online: pass download=True (CLI: --download) to fetch it with torchvision, or\n"
            "  * offline: build an .npz from the lossless copy and pass its path, e.g.\n"
            "        python ../shared/data/cifar10/unpack.py .data/cifar10.npz\n"
            "    then data='.data/cifar10.npz' (CLI: --data .data/cifar10.npz)"
        )
    else:
        how = (
            "  * online: pass download=True (CLI: --download) to fetch it with torchvision (2.6 GB), or\n"
            "  * offline: save the labeled splits as an .npz with uint8 HWC arrays\n"
            "    x_train (5000, 96, 96, 3), y_train, x_test (8000, 96, 96, 3), y_test and pass its path"
        )
    return f"{name} was not found at '{data}'. To fix:\n{how}"


def load_dataset(name: str, data: str | Path, *, download: bool = False) -> ImageDataset:
    """Load ``name`` from ``data`` (a torchvision root directory or an .npz file)."""
    check_choice("dataset", name, DATASETS)
    data = Path(data).expanduser()
    if data.suffix == ".npz":
        if not data.is_file():
            raise ConfigError(missing_data_message(name, data))
        return _from_npz(name, data)
    if not download and not data.is_dir():
        raise ConfigError(missing_data_message(name, data))
    try:
        return _from_torchvision(name, data, download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise ConfigError(missing_data_message(name, data) + f"\n(torchvision said: {error})") from None


def check_shapes(name: str, x: np.ndarray, y: np.ndarray, split: str, where: str) -> None:
    size = SPECS[name].image_size
    if x.ndim != 4 or x.shape[1:] != (size, size, 3) or x.dtype != np.uint8:
        raise ConfigError(
            f"{where}: x_{split} must be uint8 of shape (N, {size}, {size}, 3) for {name}; got {x.dtype} {x.shape}"
        )
    if y.shape != (len(x),):
        raise ConfigError(f"{where}: y_{split} must have shape ({len(x)},); got {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= SPECS[name].num_classes):
        raise ConfigError(f"{where}: y_{split} must hold labels 0..{SPECS[name].num_classes - 1}")


def _from_npz(name: str, path: Path) -> ImageDataset:
    with np.load(path) as arrays:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
        if missing:
            raise ConfigError(f"{path} lacks the array(s) {sorted(missing)}; it needs x_train, y_train, x_test, y_test")
        parts = {k: arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        # A subset of the official test set says which images it holds (the shared STL-10 copy does).
        test_index = torch.from_numpy(arrays["test_index"].astype(np.int64)) if "test_index" in arrays.files else None
    for split in ("train", "test"):
        check_shapes(name, parts[f"x_{split}"], parts[f"y_{split}"], split, str(path))
    if test_index is not None and test_index.shape != (len(parts["y_test"]),):
        raise ConfigError(f"{path}: test_index must have one entry per test image; got shape {tuple(test_index.shape)}")
    return ImageDataset(
        name,
        hwc_to_tensor(parts["x_train"]),
        torch.from_numpy(parts["y_train"].astype(np.int64)),
        hwc_to_tensor(parts["x_test"]),
        torch.from_numpy(parts["y_test"].astype(np.int64)),
        SPECS[name].class_names,
        f"npz: {path}",
        test_index,
    )


def hwc_to_tensor(images: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _from_torchvision(name: str, root: Path, download: bool) -> ImageDataset:
    import torchvision.datasets as tvd

    if name == "cifar10":
        train = tvd.CIFAR10(str(root), train=True, download=download)
        test = tvd.CIFAR10(str(root), train=False, download=download)
        x_train, x_test = hwc_to_tensor(np.asarray(train.data)), hwc_to_tensor(np.asarray(test.data))
        y_train, y_test = np.asarray(train.targets), np.asarray(test.targets)
    else:
        train = tvd.STL10(str(root), split="train", download=download)
        test = tvd.STL10(str(root), split="test", download=download)
        # torchvision already returns STL-10 as (N, 3, 96, 96) uint8 with labels 0..9.
        x_train, x_test = torch.from_numpy(np.asarray(train.data)), torch.from_numpy(np.asarray(test.data))
        y_train, y_test = np.asarray(train.labels), np.asarray(test.labels)
    return ImageDataset(
        name,
        x_train.contiguous(),
        torch.from_numpy(y_train.astype(np.int64)),
        x_test.contiguous(),
        torch.from_numpy(y_test.astype(np.int64)),
        SPECS[name].class_names,
        f"torchvision: {root}",
    )


def synthetic_dataset(name: str, train_size: int, test_size: int, seed: int = 0) -> ImageDataset:
    """Random images of ``name``'s shape with learnable labels (a class-dependent colour cast).

    For tests and smoke runs only: numbers trained on it mean nothing.
    """
    check_choice("dataset", name, DATASETS)
    spec = SPECS[name]
    generator = torch.Generator().manual_seed(seed)
    palette = torch.rand(spec.num_classes, 3, 1, 1, generator=generator)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(n) % spec.num_classes
        noise = torch.rand(n, 3, spec.image_size, spec.image_size, generator=generator)
        images = (0.5 * noise + 0.5 * palette[labels]).mul(255).round().to(torch.uint8)
        return images, labels

    x_train, y_train = draw(train_size)
    x_test, y_test = draw(test_size)
    return ImageDataset(name, x_train, y_train, x_test, y_test, spec.class_names, f"synthetic (seed {seed})")


def save_npz(dataset: ImageDataset, path: str | Path) -> Path:
    """Write ``dataset`` in the .npz form :func:`load_dataset` reads (uint8 HWC)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if dataset.test_index is None else {"test_index": dataset.test_index.cpu().numpy()}
    np.savez(
        path,
        x_train=dataset.x_train.permute(0, 2, 3, 1).cpu().numpy(),
        y_train=dataset.y_train.cpu().numpy(),
        x_test=dataset.x_test.permute(0, 2, 3, 1).cpu().numpy(),
        y_test=dataset.y_test.cpu().numpy(),
        **extra,
    )
    return path
