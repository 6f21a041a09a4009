"""Datasets (CIFAR-10, STL-10) from .npz and torchvision, augmentation, and the models."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pagcore.base.validation import ConfigError
from pagcore.data import SPECS, load_dataset, save_npz, synthetic_dataset
from pagcore.paper.augment import CropFlip, random_crop_flip
from pagcore.paper.models import ResNet18, build_model

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
SHARED_STL = SHARED_CIFAR.parent / "stl10"


@pytest.mark.parametrize("name", ["cifar10", "stl10"])
def test_npz_round_trip(tmp_path, name):
    original = synthetic_dataset(name, 20, 10, seed=1)
    loaded = load_dataset(name, save_npz(original, tmp_path / f"{name}.npz"))
    size = SPECS[name].image_size
    assert loaded.x_train.shape == (20, 3, size, size) and loaded.x_train.dtype == torch.uint8
    assert loaded.y_test.dtype == torch.int64
    for part in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(loaded, part), getattr(original, part))
    assert loaded.source.startswith("npz")


def test_missing_npz_names_the_fix(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_dataset("cifar10", tmp_path / "nope.npz")
    message = str(error.value)
    assert "not found" in message and "unpack.py" in message and "download" in message


def test_missing_directory_without_download(tmp_path):
    with pytest.raises(ConfigError, match="stl10 was not found"):
        load_dataset("stl10", tmp_path / "absent")


def test_wrong_image_shape_is_reported(tmp_path):
    path = save_npz(synthetic_dataset("cifar10", 4, 4), tmp_path / "c.npz")
    with pytest.raises(ConfigError, match=r"\(N, 96, 96, 3\)"):
        load_dataset("stl10", path)


def test_npz_lacking_arrays(tmp_path):
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ConfigError, match="lacks"):
        load_dataset("cifar10", tmp_path / "partial.npz")


class FakeCifar:
    def __init__(self, root, train, download):
        n = 6 if train else 4
        self.data = np.full((n, 32, 32, 3), 7 if train else 9, np.uint8)
        self.data[:, 0, 0, :] = [1, 2, 3]
        self.targets = list(range(n))


class FakeStl:
    def __init__(self, root, split, download):
        n = 5 if split == "train" else 3
        self.data = np.zeros((n, 3, 96, 96), np.uint8)
        self.labels = np.arange(n)


def test_torchvision_layouts_are_converted(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, "CIFAR10", FakeCifar)
    monkeypatch.setattr(tvd, "STL10", FakeStl)
    cifar = load_dataset("cifar10", tmp_path)
    assert cifar.x_train.shape == (6, 3, 32, 32)
    assert cifar.x_train[0, :, 0, 0].tolist() == [1, 2, 3]  # HWC -> CHW
    assert cifar.y_test.tolist() == [0, 1, 2, 3]
    stl = load_dataset("stl10", tmp_path)
    assert stl.x_train.shape == (5, 3, 96, 96) and stl.x_test.shape == (3, 3, 96, 96)


def test_a_test_subset_says_what_it_is(tmp_path):
    full = synthetic_dataset("stl10", 20, 8000)
    assert full.test_set == "all 8,000 STL-10 test images"
    subset = synthetic_dataset("stl10", 20, 50)
    subset.test_index = torch.arange(0, 100, 2)
    loaded = load_dataset("stl10", save_npz(subset, tmp_path / "s.npz"))
    assert torch.equal(loaded.test_index, subset.test_index)
    assert loaded.test_set == "50-image class-balanced subset of the STL-10 test set"
    lopsided = loaded.subset(test=7)  # 7 images of 10 classes cannot be balanced
    assert lopsided.test_set == "7-image subset of the STL-10 test set" and len(lopsided.test_index) == 7


@pytest.mark.skipif(not SHARED_STL.exists(), reason="the shared STL-10 copy is not on this machine")
def test_real_stl10_through_the_npz_path(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SHARED_STL / "unpack.py"), str(tmp_path / "stl10.npz")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    data = load_dataset("stl10", tmp_path / "stl10.npz")
    assert data.x_train.shape == (5000, 3, 96, 96) and data.x_test.shape == (5000, 3, 96, 96)
    assert data.test_set == "5,000-image class-balanced subset of the STL-10 test set"
    assert int(data.test_index.max()) < 8000 and len(set(data.test_index.tolist())) == 5000


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="the shared CIFAR-10 copy is not on this machine")
def test_real_cifar10_through_the_npz_path(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("unpack", SHARED_CIFAR / "unpack.py")
    unpack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unpack)
    x_test, y_test = unpack.load("test")
    np.savez(tmp_path / "cifar10.npz", x_train=x_test[:100], y_train=y_test[:100], x_test=x_test, y_test=y_test)
    dataset = load_dataset("cifar10", tmp_path / "cifar10.npz")
    assert dataset.x_test.shape == (10_000, 3, 32, 32)
    assert torch.bincount(dataset.y_test).tolist() == [1000] * 10
    assert dataset.class_names[0] == "airplane"


class TestAugmentation:
    def test_matches_pad_crop_flip_by_hand(self):
        x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
        t = CropFlip(top=torch.tensor([0, 8]), left=torch.tensor([8, 3]), flip=torch.tensor([False, True]), padding=4)
        padded = F.pad(x, (4, 4, 4, 4))
        expected = torch.stack([padded[0, :, 0:6, 8:14], padded[1, :, 8:14, 3:9].flip(-1)])
        assert torch.equal(t(x), expected)

    def test_same_transform_on_targets_commutes_with_subtraction(self):
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(5, 3, 8, 8, generator=generator)
        reps = torch.rand(5, 4, 3, 8, 8, generator=generator)
        t = random_crop_flip(5, generator=generator)
        # T(r) - T(x) == T(r - x): the target of the augmented image is the augmented target.
        torch.testing.assert_close(t(reps) - t(x).unsqueeze(1), t(reps - x.unsqueeze(1)))

    def test_draws_cover_offsets_and_flip_half_the_time(self):
        t = random_crop_flip(20000, generator=torch.Generator().manual_seed(0))
        assert set(t.top.unique().tolist()) == set(range(9)) == set(t.left.unique().tolist())
        assert abs(t.flip.float().mean().item() - 0.5) < 0.02

    def test_each_image_gets_its_own_transform(self):
        x = torch.rand(1, 3, 8, 8).expand(64, 3, 8, 8)
        out = random_crop_flip(64, generator=torch.Generator().manual_seed(0))(x)
        assert len({tuple(o.flatten().tolist()) for o in out}) > 10


class TestModels:
    def test_cifar_form(self):
        model = build_model("cifar10", width=8)
        assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
        assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)

    def test_stl_form(self):
        model = build_model("stl10", width=8)
        assert model.stem[0].kernel_size == (7, 7) and isinstance(model.stem[3], torch.nn.MaxPool2d)
        assert model(torch.rand(2, 3, 96, 96)).shape == (2, 10)

    def test_resnet18_has_eight_basic_blocks_and_the_usual_size(self):
        model = ResNet18(10, stem="cifar")
        assert sum(type(m).__name__ == "BasicBlock" for m in model.modules()) == 8
        assert 11.1e6 < sum(p.numel() for p in model.parameters()) < 11.2e6

    def test_normalisation_is_inside_the_model(self):
        model = build_model("cifar10", width=8).eval()
        x = torch.rand(2, 3, 32, 32)
        manual = model.head(torch.flatten(model.pool(model.stages(model.stem((x - 0.5) / 0.5))), 1))
        torch.testing.assert_close(model(x), manual)
