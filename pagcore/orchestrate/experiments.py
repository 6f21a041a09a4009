"""The paper's real-data experiments as named rows of runs (Tables 1, 2 and 4, Figure 5).

A row of a results table ("vanilla", "class_mean", "rigd_linf", ...) is a :class:`Row`: the
knobs that make it what it is (objective, target source, threat model) and, for RIGD, the row
of its adversarially trained teacher. A :class:`RealDataExperiment` turns rows into training
configurations that share one base (scale, schedule, seed), finds their runs in the run store,
and trains the missing ones, teachers before their RIGD students. The chapter notebook and the
status page use it, so that they hold only orchestration and prose.

Only runs of the requested ``kind`` are ever returned: the book asks for ``real`` runs, the
smoke tests for ``smoke`` ones, so a smoke run can never reach a results table.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pagcore.base.validation import ConfigError, check_choice
from pagcore.config import KINDS, ExecutionConfig, TrainConfig
from pagcore.data import ImageDataset, load_dataset, synthetic_dataset
from pagcore.evaluate.final import EvaluationConfig
from pagcore.orchestrate.sweep import cli_arguments
from pagcore.paper import reported
from pagcore.paper.attacks import NORM_WORDS, THREATS
from pagcore.store.runs import Run, RunStore
from pagcore.train.trainer import TrainResult, run_name_for, train

BOOST_THREATS: tuple[str, ...] = THREATS
"""The threat models of the later version's PAG-boosted adversarial training on CIFAR-10: both."""

BOOST_LAMBDAS: dict[str, float] = {
    "nearest_neighbor": reported.LAMBDA["cifar10"]["nearest_neighbor"],
    "score": reported.SCORE_LAMBDA["cifar10"],
}
"""The sources of targets of PAG-boosted adversarial training (the later version's claim), one arm
each, with the λ of each: nearest neighbour, the model-free source whose seeds the rule of evidence
measures, and the score-based targets, the later version's own. Each keeps its λ for the ResNet-18
without adversarial training (the paper's Table 3, the authors' score-based value): the later version
gives none for adversarial training, and the book has not tuned one."""


def boost_row(threat: str, source: str | None = None) -> str:
    """The row of adversarial training in ``threat``, with the PAG term of ``source`` (None: without)."""
    return "_".join(("adversarial", *((source,) if source else ()), threat))


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    knobs: dict[str, Any]
    teacher: str | None = None  # the row whose run is this row's RIGD teacher
    in_paper: bool = True


ROWS: dict[str, Row] = {
    row.name: row
    for row in (
        Row("vanilla", "Vanilla", {"objective": "cross_entropy"}),
        Row("one_image", "One Image", {"objective": "pag", "source": "one_image"}),
        Row("class_mean", "Class Mean", {"objective": "pag", "source": "class_mean"}),
        Row("nearest_neighbor", "Nearest Neighbor", {"objective": "pag", "source": "nearest_neighbor"}),
        Row("score", "Score-based (SBG)", {"objective": "pag", "source": "score"}, in_paper=False),
        Row("rigd_linf", "RIGD ℓ∞", {"objective": "pag", "source": "rigd"}, teacher="adversarial_linf"),
        Row("rigd_l2", "RIGD ℓ2", {"objective": "pag", "source": "rigd"}, teacher="adversarial_l2"),
        Row(
            "adversarial_linf",
            "Adversarial training ℓ∞ (RIGD teacher)",
            {"objective": "adversarial", "threat": "linf"},
            in_paper=False,
        ),
        Row(
            "adversarial_l2",
            "Adversarial training ℓ2 (RIGD teacher)",
            {"objective": "adversarial", "threat": "l2"},
            in_paper=False,
        ),
        Row(
            "gaussian_noise",
            "Gaussian noise (smoothing base)",
            {"objective": "gaussian_noise"},
            in_paper=False,
        ),
    )
}
# PAG-boosted adversarial training: a row per source of targets and threat model, labelled after the source's row.
ROWS.update(
    (
        boost_row(threat, source),
        Row(
            boost_row(threat, source),
            f"Adversarial training {NORM_WORDS[threat]} + PAG, {ROWS[source].label}",
            {"objective": "adversarial", "threat": threat, "source": source, "lam": lam},
            in_paper=False,
        ),
    )
    for source, lam in BOOST_LAMBDAS.items()
    for threat in BOOST_THREATS
)
PAPER_ROWS: tuple[str, ...] = tuple(name for name, row in ROWS.items() if row.in_paper)
ROW_LABELS = {name: row.label for name, row in ROWS.items()}

# Knobs in which a stored run may differ from the requested row and still answer it: the
# schedule (a shorter run stands in, labelled with its epochs) and the teacher's name, which
# contains the teacher's own schedule.
SCHEDULE_KNOBS = ("epochs", "teacher")


def load_data(
    dataset: str, data: str = "", *, download: bool = False, synthetic: list[int] | None = None
) -> ImageDataset:
    """The chapter's dataset: ``synthetic=[train, test]`` for smoke runs, else from ``data``."""
    if synthetic:
        return synthetic_dataset(dataset, *synthetic)
    if not data:
        raise ConfigError(
            "data is required to train or evaluate: a torchvision root directory or an .npz file"
            " (or synthetic sizes, for smoke runs)"
        )
    return load_dataset(dataset, data, download=download)


def teacher_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """What a RIGD student passes on to its adversarially trained teacher: its seed, nothing else
    (a student's lambda or k say nothing about how its teacher is trained)."""
    return {k: v for k, v in overrides.items() if k == "seed"}


@dataclass
class RealDataExperiment:
    """The runs of one results table: a dataset, shared knobs (scale, schedule, ...) and a run store."""

    dataset: str
    knobs: dict[str, Any] = field(default_factory=dict)
    store: RunStore = field(default_factory=RunStore)
    kind: str = "real"

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        TrainConfig.from_flat({**self.knobs, "dataset": self.dataset})  # unknown knobs fail here, before any work

    def row_knobs(self, row: str, **overrides: Any) -> dict[str, Any]:
        """The flat knobs of ``row`` (``overrides`` e.g. ``lam=0.1`` or ``seed=2``), before the scale's
        preset fills in the rest: what :meth:`config` resolves and a chapter's command line passes."""
        spec = ROWS[check_choice("row", row, tuple(ROWS))]
        knobs = {**self.knobs, **overrides, **spec.knobs, "dataset": self.dataset}
        if spec.teacher:
            teacher = self.config(spec.teacher, **teacher_overrides(overrides))
            knobs["teacher"] = run_name_for(teacher, self.kind)
        if spec.knobs["objective"] != "pag" and "lam" not in spec.knobs:
            knobs.pop("lam", None)  # a lambda for the PAG rows does not apply here
        return knobs

    def config(self, row: str, **overrides: Any) -> TrainConfig:
        """The resolved configuration of ``row`` (``overrides`` e.g. ``lam=0.1`` or ``seed=2``)."""
        return TrainConfig.from_flat(self.row_knobs(row, **overrides)).resolve()

    def run(self, row: str, **overrides: Any) -> Run | None:
        """The stored, complete run answering ``row``, or None.

        The run with exactly this configuration is preferred; failing that, the complete run
        of the same kind that differs only in its schedule and has the most epochs.
        """
        config = self.config(row, **overrides)
        exact = self.store.run(run_name_for(config, self.kind))
        if exact.complete:
            return exact
        wanted = {k: v for k, v in config.identity().items() if k not in SCHEDULE_KNOBS}
        # Every knob but the schedule must match: a run with knobs the row lacks (adversarial training
        # with a PAG term, for the adversarial rows) is another model.
        candidates = [
            r
            for r in self.store.select(kind=self.kind, **wanted)
            if set(r.params) <= {*wanted, *SCHEDULE_KNOBS, "kind"}
        ]
        teacher_row = ROWS[row].teacher
        if teacher_row:
            threat = ROWS[teacher_row].knobs["threat"]
            candidates = [r for r in candidates if self.teacher_threat(r) == threat]
        return max(candidates, key=lambda r: r.params["epochs"], default=None)

    def teacher_threat(self, run: Run) -> str:
        """The threat model of a RIGD run's teacher; its teacher must be in the store."""
        try:
            teacher = self.store.find(run.params["teacher"])
        except FileNotFoundError as missing:
            raise ConfigError(
                f"RIGD run {run.name} names teacher {run.params['teacher']!r}, which is not in the store"
            ) from missing
        return teacher.params["adversary"]["threat"]

    def train(
        self,
        row: str,
        data: ImageDataset,
        options: ExecutionConfig | None = None,
        evaluation: EvaluationConfig | None = None,
        **overrides: Any,
    ) -> TrainResult:
        """Train (or resume) ``row``; a RIGD row first trains its adversarial teacher."""
        options = options or ExecutionConfig(kind=self.kind)
        if options.kind != self.kind:
            raise ConfigError(f"options.kind is {options.kind!r} but this experiment's runs are {self.kind!r}")
        teacher_row = ROWS[row].teacher
        if teacher_row:
            teacher = self.train(teacher_row, data, options, evaluation, **teacher_overrides(overrides))
            if not teacher.finished:
                return teacher
        return train(self.config(row, **overrides), data, self.store, options, evaluation)


def shared_knobs(scale: str, knobs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A chapter's shared training knobs at ``scale``, those left at None (the scale's) dropped."""
    return {"scale": scale, **{k: v for k, v in (knobs or {}).items() if v is not None}}


def train_command(
    dataset: str, row: str, overrides: Mapping[str, Any], scale: str, data: str, knobs: Mapping[str, Any] | None = None
) -> str:
    """The shell command that makes, resumes or skips the real run of ``row`` with ``overrides``, as a
    chapter shows it (a RIGD student's teacher named by its run); ``knobs`` are the chapter's shared
    training knobs, as :func:`pagcore.orchestrate.queue.chapter_runs` takes them."""
    knobs = RealDataExperiment(dataset, shared_knobs(scale, knobs)).row_knobs(row, **overrides)
    # What every command shares first, so that a list of them reads column by column.
    shared = {"scale": scale, "dataset": dataset, "data": data}
    return "python -m pagcore " + shlex.join(cli_arguments("train", {**shared, **knobs}))
