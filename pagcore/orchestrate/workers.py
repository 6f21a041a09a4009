"""Runs trained side by side, each in a worker process of its own.

A worker is a process of its own (its own CUDA context, its own share of the CPU cores,
stoppable on its own). It trains the one run of its :class:`WorkerSpec` until a wall-clock
deadline, evaluates it if it finished with time left, and writes what it did to ``result.json``
beside the spec: the images it trained and when, so that the throughput of runs side by side is
measured, not assumed. It trains the run alone, never its RIGD teacher: whatever starts workers
starts a student once its teacher is complete
(:meth:`pagcore.orchestrate.queue.RunQueue.make_side_by_side`).

At its deadline a worker stops by itself, with a checkpoint; one still running a little later
is asked to stop (SIGTERM: a checkpoint after the current step), then killed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pagcore
from pagcore.config import ExecutionConfig, TrainConfig
from pagcore.data import ImageDataset
from pagcore.evaluate.final import EvaluationConfig
from pagcore.orchestrate.experiments import RealDataExperiment, load_data
from pagcore.store.provenance import write_json_atomic
from pagcore.store.runs import Run, RunStore
from pagcore.train.trainer import prepare_data, run_name_for, train

STOP_SECONDS = 20.0
"""Allowed for a worker past its deadline to checkpoint and exit (see :func:`wait_for_workers`)."""

# The child imports the same pagcore as this process, installed or not (a checkout on a machine
# where nothing is installed): its folder goes on the child's path where it is not already.
WORKER_CODE = (
    "import sys\n"
    "if sys.argv[2] not in sys.path:\n"
    "    sys.path.insert(0, sys.argv[2])\n"
    "from pagcore.orchestrate.workers import run_worker\n"
    "run_worker(sys.argv[1])\n"
)
PACKAGE_PARENT = str(Path(pagcore.__file__).resolve().parents[1])


@dataclass(frozen=True)
class DataSource:
    """Where a worker reads a dataset: a .npz file or torchvision root, or random images of
    ``synthetic`` (train, test) sizes."""

    path: str = ""
    synthetic: tuple[int, int] | None = None

    def load(self, dataset: str) -> ImageDataset:
        return load_data(dataset, self.path, synthetic=list(self.synthetic) if self.synthetic else None)


@dataclass(frozen=True)
class WorkerSpec:
    """One run for a worker: ``row`` of ``dataset`` with ``overrides`` and the shared ``knobs``,
    into the run store at ``store``, trained until ``deadline`` (a :func:`time.time` reading: it
    crosses processes) or for ``minutes`` from when its data is loaded; with ``evaluate``, a run
    that finished with more than ``evaluation_seconds`` left is evaluated too."""

    dataset: str
    row: str
    overrides: dict[str, Any]
    knobs: dict[str, Any]
    kind: str
    store: str
    source: DataSource
    deadline: float
    options: ExecutionConfig
    evaluation: EvaluationConfig
    minutes: float | None = None
    evaluate: bool = True
    evaluation_seconds: float = 0.0

    def config(self) -> TrainConfig:
        experiment = RealDataExperiment(self.dataset, self.knobs, RunStore(self.store), kind=self.kind)
        return experiment.config(self.row, **self.overrides)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: str | Path) -> WorkerSpec:
        raw = json.loads(Path(path).read_text())
        source = DataSource(raw["source"]["path"], tuple(raw["source"]["synthetic"] or ()) or None)
        options, evaluation = ExecutionConfig(**raw["options"]), EvaluationConfig(**raw["evaluation"])
        return cls(**{**raw, "source": source, "options": options, "evaluation": evaluation})


def images_trained(run: Run, config: TrainConfig, train_images: int) -> int:
    """How far ``run`` is, in training images: all of them once its final weights exist, else its
    resumable checkpoint's position."""
    if run.trained:
        return config.schedule.epochs * train_images
    position = run.load_checkpoint("latest")
    if position is None:
        return 0
    return position["epoch"] * train_images + min(position["step"] * config.schedule.batch_size, train_images)


def run_worker(spec_file: str | Path) -> dict:
    """The worker process: train the run of the spec in ``spec_file``, evaluate it if it finished
    with time left, and write what it did to ``result.json`` beside the spec (also returned): the
    run, whether training finished, its status, the images trained, from when to when (wall clock)."""
    spec = WorkerSpec.read(spec_file)
    store, config = RunStore(spec.store), spec.config()
    data = spec.source.load(spec.dataset)
    train_images = len(prepare_data(config, data).x_train)
    run = store.run(run_name_for(config, spec.kind))
    before = images_trained(run, config, train_images)
    options = replace(spec.options, kind=spec.kind, evaluate=False, progress=False)
    started = time.time()
    seconds = spec.deadline - started
    if spec.minutes is not None:
        seconds = min(seconds, 60 * spec.minutes)
    finished = False
    if seconds > 0:
        budget = replace(options, max_minutes=None if math.isinf(seconds) else seconds / 60)
        finished = train(config, data, store, budget, spec.evaluation).finished
    stopped = time.time()
    images = images_trained(run, config, train_images) - before
    if finished and spec.evaluate and spec.deadline - time.time() > spec.evaluation_seconds:
        train(config, data, store, replace(options, evaluate=True, retrain=False), spec.evaluation)
    result = {
        "run": run.name,
        "finished": finished,
        "status": run.status,
        "images": images,
        "train_images": train_images,
        "started": started,
        "stopped": stopped,
        "train_seconds": round(stopped - started, 3),
    }
    write_json_atomic(Path(spec_file).with_name("result.json"), result)
    return result


def threads_per_worker(workers: int) -> int:
    """The machine's cores shared out among ``workers`` side by side, so that they do not
    oversubscribe them; never more than this process's ``OMP_NUM_THREADS``."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return min(threads, int(os.environ.get("OMP_NUM_THREADS", threads)))


@dataclass
class Worker:
    """A worker process and its folder (``spec.json``, ``worker.log``, ``result.json``)."""

    label: str
    folder: Path
    process: subprocess.Popen
    launched: float = field(default_factory=time.time)
    exited: float | None = None
    stopped: bool = False  # asked to stop, at its deadline


def launch_worker(spec: WorkerSpec, folder: Path, label: str, threads: int) -> Worker:
    """A worker process training ``spec`` with ``threads`` CPU threads; its files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "spec.json"
    spec.write(spec_file)
    with open(folder / "worker.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE, str(spec_file), PACKAGE_PARENT],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
    return Worker(label, folder, process)


def wait_for_workers(running: list[Worker], deadline: float, stop_seconds: float = STOP_SECONDS) -> list[Worker]:
    """The workers of ``running`` that exited, once one has. They stop by themselves at their
    ``deadline`` (wall clock); those still running three quarters of ``stop_seconds`` later are
    asked to stop (SIGTERM: a checkpoint after the current step), and killed at its end."""
    stop_at = deadline + 0.75 * stop_seconds
    while time.time() < stop_at:
        done = [w for w in running if w.process.poll() is not None]
        if done:
            for worker in done:
                worker.exited = time.time()
            return done
        time.sleep(0.2)
    for worker in running:
        worker.stopped = True
        worker.process.terminate()
    for worker in running:
        try:
            worker.process.wait(timeout=max(0.1, deadline + stop_seconds - time.time()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        worker.exited = time.time()
    return list(running)


def _rate(images: float, seconds: float) -> float | None:
    return round(images / seconds, 1) if seconds > 0 else None


def worker_outcome(worker: Worker) -> dict:
    """What a worker did: its run's outcome, images trained and images/s (measured, not assumed);
    the end of its log when it wrote no result."""
    facts: dict[str, Any] = {"entry": worker.label, "launched": worker.launched, "exited": worker.exited}
    result_file = worker.folder / "result.json"
    if worker.process.returncode or not result_file.exists():
        log = worker.folder / "worker.log"
        stopped = "stopped at its deadline (resumable from its last checkpoint)"
        return {
            **facts,
            "outcome": stopped if worker.stopped else "failed",
            "exit_code": worker.process.returncode,
            "log_tail": log.read_text(errors="replace").splitlines()[-30:] if log.exists() else [],
        }
    result = json.loads(result_file.read_text())
    if result["status"] == "complete":
        outcome = "complete"
    elif result["finished"]:
        outcome = "trained, evaluation left for the next call"
    else:
        outcome = "unfinished"
    rate = _rate(result["images"], result["train_seconds"])
    return {**facts, **result, "outcome": outcome, "images_per_second": rate}


def throughput(outcomes: list[dict]) -> float | None:
    """Images/s of runs trained side by side: all their images over the span from the first start
    of training to the last stop (idle slots and staggered starts count against it)."""
    timed = [o for o in outcomes if o.get("train_seconds")]
    if not timed:
        return None
    return _rate(sum(o["images"] for o in timed), max(o["stopped"] for o in timed) - min(o["started"] for o in timed))
