"""The distance ceiling of class-mean targets, measured and recorded like a run.

If the input-gradient of every logit f_c pointed exactly along r_c - x everywhere (r_c the class
mean), each f_c would be constant on the spheres about r_c, a decreasing function of |x - r_c|
alone, and the prediction a function of the ten distances. How well any classifier of those ten
numbers can do is therefore a ceiling for a perfectly aligned class-mean PAG model. Three are
measured: the nearest class mean (logits -|x - r_c|^2 / 2, whose gradients are exactly r_c - x),
and a linear model and a small MLP trained on the standardised squared distances of the training
images, an estimate of how much class information those numbers hold.

    python -m pagcore ceiling --dataset cifar10 --data .data/cifar10.npz
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pagcore.data import SPECS, ImageDataset, as_float
from pagcore.paper.targets import class_mean_representatives
from pagcore.store.provenance import run_record, utc_now, write_json_atomic
from pagcore.store.runs import DEFAULT_ROOT

MEASUREMENTS = DEFAULT_ROOT / "measurements"
"""Where recorded measurements that are not training runs live, beside the runs."""

HEADS = ("nearest", "linear", "mlp")


def _head(name: str, num_classes: int) -> nn.Module:
    if name == "linear":
        return nn.Linear(num_classes, num_classes)
    return nn.Sequential(
        nn.Linear(num_classes, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, num_classes)
    )


def distance_accuracies(data: ImageDataset, epochs: int = 30, seed: int = 0) -> dict[str, float]:
    """Test accuracy of each classifier of the distances to the class means (see the module docstring)."""
    num_classes = int(data.y_train.max()) + 1
    reps = class_mean_representatives(data.x_train, data.y_train, num_classes, center=0.5).flatten(1).double()

    def features(x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(as_float(x).flatten(1).double(), reps).pow(2).float()

    train_x, test_x = features(data.x_train), features(data.x_test)
    result = {"nearest": (test_x.argmin(1) == data.y_test).double().mean().item()}
    mean, std = train_x.mean(0), train_x.std(0)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(seed)
    for name in ("linear", "mlp"):
        head = _head(name, num_classes)
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
        for _ in range(epochs):
            for batch in torch.randperm(len(train_x)).split(256):
                loss = nn.functional.cross_entropy(head(train_x[batch]), data.y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            result[name] = (head(test_x).argmax(1) == data.y_test).double().mean().item()
    return result


def ceiling_path(dataset: str, root: Path | None = None) -> Path:
    return (root or MEASUREMENTS) / f"class_mean_distance_ceiling-{dataset}.json"


def measure_ceiling(
    data: ImageDataset, dataset: str, *, kind: str, epochs: int = 30, seed: int = 0, root: Path | None = None
) -> dict[str, Any]:
    """Measure the ceiling on ``data`` and write it with its record (parameters, code version, device,
    date, wall time); returns the record."""
    started, start = utc_now(), time.perf_counter()
    accuracies = distance_accuracies(data, epochs=epochs, seed=seed)
    parameters = {
        "dataset": dataset,
        "epochs": epochs,
        "seed": seed,
        "heads": list(HEADS),
        "train_images": len(data.y_train),
        "test_images": len(data.y_test),
        "scale": "none: it depends on the data only",
    }
    record = run_record(
        parameters,
        wall_seconds=time.perf_counter() - start,
        started=started,
        device="cpu",
        kind=kind,
        extra={"accuracy": accuracies},
    )
    write_json_atomic(ceiling_path(dataset, root), record)
    return record


def load_ceiling(dataset: str, root: Path | None = None) -> dict[str, Any] | None:
    """The recorded ceiling of ``dataset`` (None if it has not been measured)."""
    path = ceiling_path(dataset, root)
    if dataset not in SPECS or not path.exists():
        return None
    return json.loads(path.read_text())
