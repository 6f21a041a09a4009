"""The reproduction status: every number the paper reports beside ours, or "not run", per scale.

:func:`reproduction_status` walks the paper's results (the toy experiment, Tables 1, 2 and 4,
Figure 5) and, for each cell and each scale (``paper``, ``cpu``), looks up the run that answers
it: the toy run's record, and the run store for everything else. Only ``real`` runs count; smoke
and pilot runs never appear. A ``cpu``-scale number is shown beside the paper's but is never a
reproduction of it: :func:`counts` keeps the scales apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pagcore.book.tables import seed_summary, training_devices
from pagcore.book.text import METRIC_COLUMNS, short_device
from pagcore.orchestrate.book_runs import SEEDS
from pagcore.orchestrate.experiments import PAPER_ROWS, ROW_LABELS, RealDataExperiment
from pagcore.paper import reported
from pagcore.store.runs import Run, RunStore

SCALE_ORDER = ("paper", "cpu")


@dataclass
class StatusRow:
    experiment: str
    setting: str
    metric: str
    paper: float
    ours: float | None
    scale: str = "paper"
    schedule: str = ""
    device: str = ""
    date: str = ""

    @property
    def gap(self) -> float | None:
        """Ours minus the paper's, in the same units (fractions)."""
        return None if self.ours is None else self.ours - self.paper


def _provenance(run: Run) -> dict[str, str]:
    sessions = run.record.get("sessions", [])
    return {
        "schedule": f"{run.params['epochs']} epochs, width {run.params['width']}",
        "device": "; ".join(training_devices(run)),
        "date": sessions[-1]["finished"][:10] if sessions else "",
    }


def toy_rows(record_path: Path) -> list[StatusRow]:
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    rows = []
    for model in ("vanilla", "pag"):
        for metric in ("clean", "pgd"):
            ours = record["summary"][model][metric] if record and record.get("kind") == "real" else None
            extra = {}
            if ours is not None:
                seeds = record["summary"]["seeds"]
                extra = {
                    "schedule": f"{record['parameters']['epochs']} epochs, {len(seeds)} seeds",
                    "device": short_device(record["device"]),
                    "date": record["finished"][:10],
                }
            rows.append(StatusRow("toy (Section 5.1)", model, metric, reported.TOY[model][metric], ours, **extra))
    return rows


def table_rows(store: RunStore, dataset: str, scale: str) -> list[StatusRow]:
    experiment = RealDataExperiment(dataset, {"scale": scale}, store=store)
    rows = []
    for row in PAPER_ROWS:
        run = experiment.run(row)
        for metric, title in METRIC_COLUMNS:
            extra = _provenance(run) if run else {}
            rows.append(
                StatusRow(
                    f"Table {reported.TABLE_NUMBER[dataset]} ({dataset})",
                    ROW_LABELS[row],
                    title,
                    reported.TABLES[dataset][row][metric],
                    run.metrics[metric] if run else None,
                    scale,
                    **extra,
                )
            )
    return rows


def seed_rows(store: RunStore, scale: str, seeds: tuple[int, ...] = SEEDS) -> list[StatusRow]:
    experiment = RealDataExperiment("cifar10", {"scale": scale}, store=store)
    runs = {seed: experiment.run("one_image", seed=seed) for seed in seeds}
    summary = seed_summary(runs)
    done = [r for r in runs.values() if r is not None]
    extra: dict[str, Any] = {}
    if done:
        extra = _provenance(done[0])
        extra["schedule"] += f", {len(done)} of {len(seeds)} seeds"
    rows = []
    for metric, title in METRIC_COLUMNS:
        rows.append(
            StatusRow(
                "Table 4 (seeds)",
                "One Image, mean",
                title,
                reported.SEED_ERROR_BARS["mean"][metric],
                summary["mean"][metric] if summary else None,
                scale,
                **extra,
            )
        )
    return rows


def lambda_rows(store: RunStore, scale: str) -> list[StatusRow]:
    experiment = RealDataExperiment("cifar10", {"scale": scale}, store=store)
    rows = []
    for lam, values in reported.LAMBDA_ABLATION.items():
        run = experiment.run("class_mean", lam=lam)
        for metric, title in METRIC_COLUMNS:
            extra = _provenance(run) if run else {}
            rows.append(
                StatusRow(
                    "Figure 5 (λ)",
                    f"Class Mean, λ = {lam:g}",
                    title,
                    values[metric],
                    run.metrics[metric] if run else None,
                    scale,
                    **extra,
                )
            )
    return rows


def reproduction_status(store: RunStore, toy_record: Path) -> list[StatusRow]:
    """Every reported number of the paper with ours beside it (``ours=None``: not run), at each scale.

    The toy experiment runs at the paper's own setting on any machine, so it has paper-scale rows only.
    """
    rows = toy_rows(toy_record)
    for scale in SCALE_ORDER:
        rows += [
            *table_rows(store, "cifar10", scale),
            *table_rows(store, "stl10", scale),
            *seed_rows(store, scale),
            *lambda_rows(store, scale),
        ]
    return rows


def counts(rows: list[StatusRow]) -> dict[str, dict[str, int]]:
    """Per scale: how many of the paper's numbers it has cells for, and how many have a run."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = out.setdefault(row.scale, {"cells": 0, "measured": 0})
        entry["cells"] += 1
        entry["measured"] += row.ours is not None
    return out
