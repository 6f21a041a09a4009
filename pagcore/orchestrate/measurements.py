"""Recorded measurements that are not training runs but need the training's own machinery.

:func:`measure_posterior_gap` builds each source's targets exactly as a training run does
(:func:`pagcore.train.trainer.build_source`, :func:`pagcore.train.score_targets.score_targets`) and
records how far they are from being log-posterior gradients (:mod:`pagcore.evaluate.posterior_gap`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pagcore.config import MODEL_FREE_SOURCES, TrainConfig
from pagcore.data import ImageDataset, as_float
from pagcore.evaluate.posterior_gap import gap_path, posterior_gaps, summary
from pagcore.store.provenance import run_record, utc_now, write_json_atomic
from pagcore.store.runs import RunStore
from pagcore.train.score_targets import score_targets
from pagcore.train.trainer import build_source


def model_free_targets(source: str, dataset: str, data: ImageDataset, rows: range, store: RunStore) -> Tensor:
    """The targets of ``source`` for every class at training images ``rows``, exactly as the cpu
    scale's training builds them (before augmentation): ``(len(rows), C, *image)``."""
    config = TrainConfig.from_flat({"objective": "pag", "source": source, "scale": "cpu", "dataset": dataset}).resolve()
    built = build_source(config, data, store, torch.device("cpu"), progress=False)
    x = as_float(data.x_train[rows.start : rows.stop])
    index = torch.arange(rows.start, rows.stop)
    classes = torch.arange(data.num_classes).expand(len(x), -1)
    return built.target_gradients(x, index, classes)


def measure_posterior_gap(
    data: ImageDataset,
    dataset: str,
    *,
    kind: str,
    images: int = 500,
    denoiser: tuple[str, Any, float] | None = None,
    store: RunStore | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Measure the posterior gap of each source's targets on the first ``images`` training images and
    write it with its record; ``denoiser`` is (run name, denoiser, σ) for the score-based targets."""
    started, start = utc_now(), time.perf_counter()
    rows = range(min(images, len(data.y_train)))
    store = store or RunStore()
    results: dict[str, Any] = {}
    for source in MODEL_FREE_SOURCES:
        results[source] = summary(posterior_gaps(model_free_targets(source, dataset, data, rows, store)))
    parameters: dict[str, Any] = {
        "dataset": dataset,
        "images": len(rows),
        "rows": "the first training images",
        "scale": "cpu (the sources' settings; the targets depend on the data only)",
    }
    if denoiser is not None:
        name, network, sigma = denoiser
        targets = score_targets(network, data.x_train, rows, sigma)
        results["score"] = summary(posterior_gaps(targets.float()))
        parameters.update(denoiser=name, score_sigma=sigma)
    record = run_record(
        parameters,
        wall_seconds=time.perf_counter() - start,
        started=started,
        device="cpu",
        kind=kind,
        extra={"gaps": results},
    )
    write_json_atomic(gap_path(dataset, root), record)
    return record
