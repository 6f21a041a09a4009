"""Make the runs that are missing: in order, before a deadline, resumably.

A :class:`RunQueue` holds runs to make (:class:`~pagcore.orchestrate.book_runs.BookRun` entries,
e.g. :func:`~pagcore.orchestrate.book_runs.book_runs`) in one run store. It says which are
complete, which cannot start and why (a provisional preset, data not given, a RIGD teacher whose
weights are elsewhere), and trains the others one after another in slices, teachers before their
students, until the deadline: a run cut off by it continues from its checkpoint next time.
Where the device has room for more than one small run, :meth:`RunQueue.make_side_by_side` trains
several at once instead, each in a worker process of its own (:mod:`pagcore.orchestrate.workers`).

``python -m pagcore table``, the chapters' ``train_missing`` and a GPU window's campaign make
their runs through it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pagcore.base.deadline import Deadline
from pagcore.base.validation import ConfigError
from pagcore.config import ExecutionConfig, TrainConfig
from pagcore.data import ImageDataset
from pagcore.evaluate.final import EvaluationConfig
from pagcore.orchestrate.book_runs import NOISE_DATASET, NOISE_ROWS, SEEDS, BookRun
from pagcore.orchestrate.experiments import ROWS, RealDataExperiment, load_data, teacher_overrides
from pagcore.orchestrate.workers import (
    STOP_SECONDS,
    DataSource,
    WorkerSpec,
    launch_worker,
    threads_per_worker,
    throughput,
    wait_for_workers,
    worker_outcome,
)
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

    def entry_knobs(self, entry: BookRun) -> dict[str, Any]:
        """The training knobs of ``entry``: its scale, unless the queue's ``knobs`` name one, and those knobs."""
        return {"scale": entry.scale, **self.knobs}

    def experiment(self, entry: BookRun) -> RealDataExperiment:
        return RealDataExperiment(entry.dataset, self.entry_knobs(entry), self.store, kind=self.kind)

    def config(self, entry: BookRun) -> TrainConfig:
        return self.experiment(entry).config(entry.row, **entry.overrides)

    def run_name(self, entry: BookRun) -> str:
        return run_name_for(self.config(entry), self.kind)

    def check(self) -> None:
        """Every entry resolves, and may be trained: raises :class:`ConfigError` before any data is read."""
        for entry in self.entries:
            check_trainable(self.config(entry), self.kind, self.store)

    def status(self, entry: BookRun) -> Status:
        name = self.run_name(entry)
        if self.store.run(name).complete:
            return Status("complete", name)
        try:
            check_trainable(self.config(entry), self.kind, self.store)
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

    # -- side by side --------------------------------------------------------------------------------

    def teacher_of(self, entry: BookRun) -> BookRun | None:
        """The entry that makes ``entry``'s RIGD teacher (its dataset, scale and seed), or None."""
        row = ROWS[entry.row].teacher
        if row is None:
            return None
        return replace(entry, row=row, overrides=teacher_overrides(entry.overrides))

    def teacher_status(self, entry: BookRun) -> Status | None:
        """None when ``entry`` has no teacher or its teacher's final weights are in the store; else
        the teacher's: ``missing`` (the student waits) or ``blocked``, with why."""
        teacher = self.teacher_of(entry)
        if teacher is None:
            return None
        status = self.status(teacher)
        if status.state == "complete":
            if self.store.run(status.run).trained:
                return None
            return Status("blocked", status.run, f"its teacher {status.run} is complete but its weights are not here")
        if status.state == "blocked":
            return Status("blocked", status.run, f"its teacher {status.run} is blocked: {status.why}")
        return Status("missing", status.run, f"waits for its teacher {status.run}")

    def with_teachers(self) -> list[BookRun]:
        """The entries in order, a RIGD student's teacher added before it where it is not an entry."""
        order, names = [], {self.run_name(entry) for entry in self.entries}
        for entry in self.entries:
            teacher = self.teacher_of(entry)
            if teacher is not None and self.run_name(teacher) not in names:
                names.add(self.run_name(teacher))
                order.append(teacher)
            order.append(entry)
        return order

    def next_startable(
        self,
        order: Sequence[BookRun],
        sources: Mapping[str, DataSource | None],
        started: set[str],
        blocked: dict[str, str],
        waiting: dict[str, str],
    ) -> BookRun | None:
        """The first entry of ``order`` not in ``started`` that can start now; the blocked and
        waiting ones passed over are noted in ``blocked`` and ``waiting``, with why."""
        for entry in order:
            if entry.label in started:
                continue
            status = self.status(entry)
            if status.state == "complete":
                continue
            if status.state == "blocked" or sources.get(entry.dataset) is None:
                blocked[entry.label] = status.why or f"no {entry.dataset} data"
                continue
            teacher = self.teacher_status(entry)
            if teacher is not None:
                (blocked if teacher.state == "blocked" else waiting)[entry.label] = teacher.why
                continue
            return entry
        return None

    def worker_spec(
        self,
        entry: BookRun,
        source: DataSource,
        deadline: float,
        options: ExecutionConfig,
        evaluation: EvaluationConfig,
        **changes: Any,
    ) -> WorkerSpec:
        """What a worker needs to train ``entry`` into this queue's store until ``deadline`` (a
        :func:`time.time` reading), reading its images from ``source``; ``changes`` to the spec's
        defaults. A worker writes to a log: no progress bars."""
        return WorkerSpec(
            dataset=entry.dataset,
            row=entry.row,
            overrides=dict(entry.overrides),
            knobs=self.entry_knobs(entry),
            kind=self.kind,
            store=str(self.store.root),
            source=source,
            deadline=deadline,
            options=replace(options, progress=False),
            evaluation=evaluation,
            **changes,
        )

    def make_side_by_side(
        self,
        sources: Mapping[str, DataSource | None],
        deadline: Deadline,
        options: ExecutionConfig,
        evaluation: EvaluationConfig,
        *,
        workers: int,
        folder: str | Path,
        evaluation_seconds: float = 0.0,
        shortest_slice_seconds: float = SHORTEST_SLICE_SECONDS,
        stop_seconds: float = STOP_SECONDS,
    ) -> dict:
        """Train the missing entries ``workers`` at a time, each in a worker process of its own
        with its share of the CPU cores (its spec, log and result in a subfolder of ``folder``),
        until none can start; what they did, as :meth:`side_by_side_report` says.

        ``sources[dataset]`` is where a worker reads an entry's images (None or absent: the entry
        is blocked). When a worker ends, the first entry that can start takes its place; a RIGD
        student waits until its teacher is complete (see :meth:`with_teachers`). Workers stop,
        resumably, ``stop_seconds`` before the deadline, which leaves them the time to checkpoint
        and exit; no worker starts with less than ``shortest_slice_seconds`` of training left. A
        worker evaluates a run that finished with more than ``evaluation_seconds`` left, else the
        next call does. With ``options.progress``, one line to stderr per worker that ends."""
        folder, threads, order = Path(folder), threads_per_worker(workers), self.with_teachers()
        running, outcomes, started, blocked, waiting = [], [], set(), {}, {}

        def seconds_left() -> float:
            return deadline.seconds_left() - stop_seconds

        while True:
            while len(running) < workers and seconds_left() >= shortest_slice_seconds:
                entry = self.next_startable(order, sources, started, blocked, waiting)
                if entry is None:
                    break
                spec = self.worker_spec(
                    entry,
                    sources[entry.dataset],
                    time.time() + seconds_left(),
                    options,
                    evaluation,
                    evaluation_seconds=evaluation_seconds,
                )
                running.append(launch_worker(spec, folder / f"{len(started):02d}", entry.label, threads))
                started.add(entry.label)
            if not running:
                break
            for worker in wait_for_workers(running, time.time() + seconds_left(), stop_seconds):
                running.remove(worker)
                outcomes.append(worker_outcome(worker))
                if options.progress:
                    print(f"{worker.label}: {outcomes[-1]['outcome']}", file=sys.stderr, flush=True)
        return self.side_by_side_report(outcomes, started, blocked, waiting)

    def side_by_side_report(
        self, outcomes: list[dict], started: set[str], blocked: dict[str, str], waiting: dict[str, str]
    ) -> dict:
        """The workers' ``runs`` (outcomes), their ``images_per_second`` together, how many of the
        entries are ``complete`` (``of`` how many), the ``blocked`` and ``waiting`` ones with why,
        and those that could start but had no time left (``not_started``)."""
        states = {entry.label: self.status(entry).state for entry in self.entries}
        passed_over = started | set(blocked) | set(waiting)
        missing = [label for label, state in states.items() if state == "missing"]
        return {
            "runs": outcomes,
            "images_per_second": throughput(outcomes),
            "complete": sum(state == "complete" for state in states.values()),
            "of": len(self.entries),
            "blocked": [{"entry": label, "why": why} for label, why in blocked.items()],
            "waiting": [{"entry": label, "why": why} for label, why in waiting.items() if label not in started],
            "not_started": [label for label in missing if label not in passed_over],
        }


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
    deadline: Deadline | None = None,
) -> dict[str, Run | None]:
    """What a chapter notebook does with its parameters: check them all, make what is missing
    (only with ``train_missing``, within ``max_minutes`` in all), and return the stored runs of
    its points (label -> (row, overrides)).

    ``knobs`` are the shared training knobs (``None`` values are left to the scale's preset);
    every parameter is validated before any data is read. A chapter that calls this more than once
    passes one ``deadline`` (``Deadline.after(max_minutes)``) to every call, so that ``max_minutes``
    stays a budget for all of them.
    """
    knobs = {k: v for k, v in knobs.items() if v is not None}
    scale = knobs.pop("scale", "paper")
    entries = [BookRun("chapter", dataset, row, overrides, scale) for row, overrides in points.values()]
    queue = RunQueue(entries, RunStore(runs_dir or None), kind=kind, knobs=knobs)
    options = ExecutionConfig(device=device, progress=progress, kind=kind).validate()
    evaluation = EvaluationConfig(pgd_steps=eval_pgd_steps, picture_images=picture_images).validate()
    minutes = ExecutionConfig(max_minutes=max_minutes).validate().max_minutes
    deadline = deadline or Deadline.after(minutes)
    for entry in entries:
        queue.config(entry)  # every point resolves (and validates) before any work
    if train_missing:
        queue.check()
        images = load_data(dataset, data, download=download, synthetic=synthetic)
        queue.make(lambda _: images, deadline, options, evaluation)
    experiment = queue.experiment(entries[0]) if entries else None
    return {label: experiment.run(row, **overrides) for label, (row, overrides) in points.items()}


def seed_row_runs(scale: str, runs_dir: str = "", kind: str = "real") -> dict[str, list[Run]]:
    """The stored runs of each row the rule of evidence trains over seeds
    (:data:`~pagcore.orchestrate.book_runs.NOISE_ROWS`, on ``NOISE_DATASET``) at ``scale``, in seed
    order, those with metrics only."""
    found = {}
    for row in NOISE_ROWS:
        runs = chapter_runs(
            NOISE_DATASET,
            {seed: (row, {"seed": seed}) for seed in SEEDS},
            knobs={"scale": scale},
            runs_dir=runs_dir,
            kind=kind,
        )
        found[row] = [run for run in runs.values() if run is not None and run.metrics]
    return found
