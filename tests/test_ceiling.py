"""The distance ceiling of class-mean targets (pagcore.evaluate.ceiling), measured and recorded."""

from dataclasses import replace

import torch

from pagcore.book import tables
from pagcore.data import synthetic_dataset
from pagcore.evaluate.ceiling import distance_accuracies, load_ceiling, measure_ceiling


def test_the_ceiling_sees_class_information_only_where_there_is_some():
    data = synthetic_dataset("cifar10", 400, 200, seed=3)  # classes differ by a colour cast
    informative = distance_accuracies(data, epochs=3)
    assert set(informative) == {"nearest", "linear", "mlp"}
    assert informative["nearest"] >= 0.6 and informative["mlp"] >= 0.6  # chance: 0.1
    shuffled = replace(data, y_train=data.y_train[torch.randperm(400, generator=torch.Generator().manual_seed(0))])
    assert max(distance_accuracies(shuffled, epochs=3).values()) <= 0.3


def test_the_ceiling_is_written_with_its_record_and_read_by_the_book(tmp_path):
    data = synthetic_dataset("cifar10", 200, 100, seed=3)
    assert load_ceiling("cifar10", tmp_path) is None and tables.class_mean_distance_ceiling("cifar10", tmp_path) is None
    record = measure_ceiling(data, "cifar10", kind="smoke", epochs=1, root=tmp_path)
    for field in ("parameters", "git", "device", "started", "finished", "wall_seconds", "kind"):
        assert field in record
    assert record["parameters"]["epochs"] == 1 and record["parameters"]["test_images"] == 100
    assert load_ceiling("cifar10", tmp_path) == record
    assert tables.class_mean_distance_ceiling("cifar10", tmp_path) == max(record["accuracy"].values())
