"""Make the runs that are missing: in order, before a deadline, resumably.

A :class:`RunQueue` holds runs to make (:class:`~pagcore.orchestrate.book_runs.BookRun` entries,
e.g. :func:`~pagcore.orchestrate.book_runs.book_runs`) in one run store. It says which are
complete, which cannot start and why (a provisional preset, data not given, a RIGD teacher whose
weights are elsewhere), and trains the others one after another in slices, teachers before their
students, until the deadline: a run cut off by it continues from its checkpoint next time.

``python -m pagcore table``, the chapters' ``train_missing`` and the sequential training of a GPU
window's campaign make their runs through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pagcore.base.deadline import Deadline
from pagcore.base.validation import ConfigError
from pagcore.config import ExecutionConfig, TrainConfig
from pagcore.data import ImageDataset
from pagcore.evaluate.final import EvaluationConfig
from pagcore.orchestrate.book_runs import BookRun
from pagcore.orchestrate.experiments import RealDataExperiment, load_data
from pagcore.store.runs import Run, RunStore
from pagcore.train.trainer import check_trainable, run_name_for

SHORTEST_SLICE_SECONDS = 30.0
"""A training slice shorter than this is not started: too little for a step and a checkpoint."""


@dataclass(frozen=True)
class Status:
    """Where an entry stands: ``complete``, ``missing`` (can start) or ``blocked`` (``why``)."""

    state: str
    run: str
    why: str = ""


class RunQueue:
    """``entries`` to make in ``store``: runs of ``kind``, with ``knobs`` shared by every entry
    (the entry's scale unless ``knobs`` names one)."""

    def __init__(
        self,
        entries: Sequence[BookRun],
        store: RunStore,
        *,
        kind: str = "real",
        knobs: Mapping[str, Any] | None = None,
    ):
        self.entries, self.store, self.kind, self.knobs = tuple(entries), store, kind, dict(knobs or {})

    def experiment(self, entry: BookRun) -> RealDataExperiment:
        return RealDataExperiment(entry.dataset, {"scale": entry.scale, **self.knobs}, self.store, kind=self.kind)

    def config(self, entry: BookRun) -> TrainConfig:
        return self.experiment(entry).config(entry.row, **entry.overrides)

    def run_name(self, entry: BookRun) -> str:
        return run_name_for(self.config(entry), self.kind)

    def check(self) -> None:
        """Every entry resolves, and may be trained: raises :class:`ConfigError` before any data is read."""
        for entry in self.entries:
            check_trainable(self.config(entry), self.kind)

    def status(self, entry: BookRun) -> Status:
        name = self.run_name(entry)
        if self.store.run(name).complete:
            return Status("complete", name)
        try:
            check_trainable(self.config(entry), self.kind)
        except ConfigError as provisional:
            return Status("blocked", name, str(provisional))
        return Status("missing", name)

    def next_missing(self, skip: set[str] = frozenset()) -> BookRun | None:
        """The first entry that can start (not complete, not blocked, not in ``skip``)."""
        return next((e for e in self.entries if e.label not in skip and self.status(e).state == "missing"), None)

    def make(
        self,
        data: Callable[[str], ImageDataset | None],
        deadline: Deadline,
        options: ExecutionConfig,
        evaluation: EvaluationConfig,
        *,
        slice_minutes: float | None = None,
        evaluation_seconds: float = 0.0,
        shortest_slice_seconds: float = SHORTEST_SLICE_SECONDS,
    ) -> list[dict]:
        """Train the missing entries in order until the deadline; one outcome per entry tried.

        ``data(dataset)`` gives an entry's images (None: not available, the entry is blocked).
        Training runs in slices of at most ``slice_minutes``. With ``evaluation_seconds`` 0 the
        final evaluation follows training whatever the time; otherwise it runs only when that
        much time is left, else it waits for the next call. A blocked entry is passed over; an
        unfinished one ends the call, since its deadline has passed. No slice shorter than
        ``shortest_slice_seconds`` is started."""
        outcomes: list[dict] = []
        blocked: set[str] = set()
        while (entry := self.next_missing(blocked)) is not None:
            if deadline.seconds_left() < shortest_slice_seconds:
                break
            images = data(entry.dataset)
            at_once = evaluation_seconds == 0
            slices = {"slice_minutes": slice_minutes, "shortest_slice_seconds": shortest_slice_seconds}
            outcome = self.make_one(entry, images, deadline, options, evaluation, evaluate=at_once, **slices)
            if outcome["outcome"] == "trained" and deadline.seconds_left() >= evaluation_seconds:
                outcome = self.make_one(entry, images, deadline, options, evaluation, evaluate=True, **slices)
            outcomes.append(outcome)
            if outcome["outcome"] == "blocked":
                blocked.add(entry.label)
            elif outcome["outcome"] != "complete":
                break
        return outcomes

    def make_one(
        self,
        entry: BookRun,
        images: ImageDataset | None,
        deadline: Deadline,
        options: ExecutionConfig,
        evaluation: EvaluationConfig,
        *,
        evaluate: bool = False,
        slice_minutes: float | None = None,
        shortest_slice_seconds: float = SHORTEST_SLICE_SECONDS,
    ) -> dict:
        """``entry`` trained in slices until it is (outcome ``trained``; ``complete`` once
        ``evaluate`` has evaluated it) or the deadline passes (``unfinished``)."""
        name = self.run_name(entry)
        if images is None:
            return {"entry": entry.label, "outcome": "blocked", "run": name, "why": f"no {entry.dataset} data"}
        experiment, slices = self.experiment(entry), []
        while deadline.seconds_left() >= shortest_slice_seconds:
            left = deadline.minutes_left()  # None: no deadline
            minutes = slice_minutes if left is None else (left if slice_minutes is None else min(slice_minutes, left))
            budget = replace(options, kind=self.kind, evaluate=evaluate, max_minutes=minutes)
            try:
                # A RIGD row trains its teacher first (an earlier entry, normally).
                result = experiment.train(entry.row, images, budget, evaluation, **entry.overrides)
            except FileNotFoundError as missing:  # a teacher complete elsewhere, whose weights are not here
                why = str(missing)
                return {"entry": entry.label, "outcome": "blocked", "run": name, "why": why, "slices": slices}
            slices.append({"run": result.run.name, "epochs_done": len(result.run.history)})
            if result.finished and result.run.name == name:
                run = result.run
                state = "complete" if run.complete else "trained"
                metrics = {k: (run.metrics or {}).get(k) for k in ("clean", "linf", "l2", "test_images")}
                return {"entry": entry.label, "outcome": state, "run": name, "metrics": metrics, "slices": slices}
        return {"entry": entry.label, "outcome": "unfinished", "run": name, "slices": slices}


def chapter_runs(
    dataset: str,
    points: dict[str, tuple[str, dict[str, Any]]],
    *,
    knobs: dict[str, Any],
    runs_dir: str = "",
    kind: str = "real",
    train_missing: bool = False,
    data: str = "",
    download: bool = False,
    synthetic: list[int] | None = None,
    device: str = "auto",
    max_minutes: float | None = None,
    progress: bool = True,
    eval_pgd_steps: int = 20,
    picture_images: int = 4,
) -> dict[str, Run | None]:
    """What a chapter notebook does with its parameters: check them all, make what is missing
    (only with ``train_missing``, within ``max_minutes`` in all), and return the stored runs of
    its points (label -> (row, overrides)).

    ``knobs`` are the shared training knobs (``None`` values are left to the scale's preset);
    every parameter is validated before any data is read.
    """
    knobs = {k: v for k, v in knobs.items() if v is not None}
    scale = knobs.pop("scale", "paper")
    entries = [BookRun("chapter", dataset, row, overrides, scale) for row, overrides in points.values()]
    queue = RunQueue(entries, RunStore(runs_dir or None), kind=kind, knobs=knobs)
    options = ExecutionConfig(device=device, progress=progress, kind=kind).validate()
    evaluation = EvaluationConfig(pgd_steps=eval_pgd_steps, picture_images=picture_images).validate()
    deadline = Deadline.after(ExecutionConfig(max_minutes=max_minutes).validate().max_minutes)
    for entry in entries:
        queue.config(entry)  # every point resolves (and validates) before any work
    if train_missing:
        queue.check()
        images = load_data(dataset, data, download=download, synthetic=synthetic)
        queue.make(lambda _: images, deadline, options, evaluation)
    experiment = queue.experiment(entries[0]) if entries else None
    return {label: experiment.run(row, **overrides) for label, (row, overrides) in points.items()}
