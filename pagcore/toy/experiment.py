"""The toy experiment: evaluation, the seeds' results beside the paper's, the record, and the
checks of what moves its numbers (a lambda sweep, longer training).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor, nn

from pagcore.base.validation import (
    ConfigError,
    check_choice,
    check_nonnegative,
)
from pagcore.evaluate.pag_score import direction_alignment
from pagcore.paper import reported
from pagcore.paper.attacks import PGD, accuracy
from pagcore.paper.targets import MODEL_FREE_SOURCES
from pagcore.store.provenance import run_record, utc_now
from pagcore.toy.problem import NUM_CLASSES, ToyConfig, ToyMLP, make_toy_data, toy_split
from pagcore.toy.training import ToyMember, train_toy_models

# What the toy reports per model: clean and PGD accuracy, and the PAG score (manifold_alignment).
TOY_METRICS = ("clean", "pgd", "alignment")


# The paper's figures for this experiment (Section 5.1).
PAPER_RESULTS = reported.TOY


@dataclass
class ToySeedResult:
    seed: int
    metrics: dict[str, dict[str, float]]  # {"vanilla": {"clean", "pgd", "alignment"}, "pag": {...}}
    models: dict[str, ToyMLP]
    test: tuple[Tensor, Tensor]


def evaluate_toy_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: PGD,
    x_adv: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Clean accuracy and accuracy under ``attack``, as fractions.

    ``x_adv``: already attacked points; ``generator``: draws a random-start attack's starts, so that
    its numbers repeat whatever else has used the global RNG.
    """
    if x_adv is None:
        x_adv = attack(model, x, y, generator=generator)
    return {"clean": accuracy(model, x, y), "pgd": accuracy(model, x_adv, y)}


def manifold_alignment(model: nn.Module, x: Tensor, y: Tensor, x_train: Tensor, y_train: Tensor) -> float:
    """The toy's PAG score: how well the model's gradients point along the data, on test points.

    Here the perceptually aligned direction is known: from a point of one class, the way to the
    other class runs along the line, to its nearest training example. The score is the mean,
    over test points x with label y and c the other class, of the cosine between
    d log p(c | x) / dx and that direction: 1 when every gradient follows the line towards the
    other class, near 0 when it leaves the line at a right angle, as around a boundary wrapped
    tightly about the data. It is Eq. (2) with nearest-neighbour targets, measured on unseen
    points and against exact nearest neighbours (distances in float64).
    """
    other = 1 - y
    directions = torch.empty_like(x)
    for c in range(NUM_CLASSES):
        points, pool = x[other == c].double(), x_train[y_train == c].double()
        nearest = pool[torch.cdist(points, pool).argmin(dim=1)]
        directions[other == c] = (nearest - points).float()
    return direction_alignment(model, x, other, directions).mean().item()


def run_toy_seeds(config: ToyConfig, *, include_vanilla: bool = True, progress: bool = True) -> list[ToySeedResult]:
    """Train the vanilla and PAG models of every seed together (:func:`train_toy_models`), then attack each."""
    names = {"vanilla": 0.0, "pag": config.lam} if include_vanilla else {"pag": config.lam}
    members = [ToyMember(seed, lam, config.source) for seed in config.seeds for lam in names.values()]
    trained = iter(train_toy_models(members, config, progress=progress, description=f"{len(members)} toy models"))
    attack = config.attack()
    results = []
    for seed in config.seeds:
        (x_train, y_train), (x_test, y_test) = toy_split(config, seed)
        models = {name: next(trained) for name in names}
        metrics = {
            name: {
                **evaluate_toy_model(model, x_test, y_test, attack),
                "alignment": manifold_alignment(model, x_test, y_test, x_train, y_train),
            }
            for name, model in models.items()
        }
        results.append(ToySeedResult(seed=seed, metrics=metrics, models=models, test=(x_test, y_test)))
    return results


@dataclass
class ToyExperiment:
    config: ToyConfig
    per_seed: list[ToySeedResult]
    seconds: float
    started: str

    def mean(self, model: str, metric: str) -> float:
        return statistics.fmean(r.metrics[model][metric] for r in self.per_seed)

    def std(self, model: str, metric: str) -> float:
        """Sample standard deviation over seeds (0 for a single seed)."""
        values = [r.metrics[model][metric] for r in self.per_seed]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def summary(self) -> dict:
        """Means over seeds (accuracies as fractions), in the CLI's JSON shape."""
        models = self.per_seed[0].metrics.keys()
        out: dict = {m: {k: self.mean(m, k) for k in TOY_METRICS} for m in models}
        out["seeds"] = list(self.config.seeds)
        out["seconds"] = round(self.seconds, 2)
        return out

    def table(self) -> list[dict]:
        """One row per model: mean and std over seeds of each of TOY_METRICS."""
        rows = []
        for m in self.per_seed[0].metrics:
            row = {"model": m}
            for k in TOY_METRICS:
                row[f"{k}_mean"], row[f"{k}_std"] = self.mean(m, k), self.std(m, k)
            rows.append(row)
        return rows

    def config_dict(self) -> dict:
        return asdict(self.config)


def run_toy_experiment(config: ToyConfig, *, include_vanilla: bool = True, progress: bool = True) -> ToyExperiment:
    """Train and attack the vanilla and PAG models for every seed of ``config``."""
    config.validate()
    started, start = utc_now(), time.perf_counter()
    per_seed = run_toy_seeds(config, include_vanilla=include_vanilla, progress=progress)
    return ToyExperiment(config=config, per_seed=per_seed, seconds=time.perf_counter() - start, started=started)


def toy_kind(config: ToyConfig) -> str:
    """``real`` when training length and data sizes are at least the paper's; anything smaller is a smoke run."""
    paper_setting = ToyConfig()
    reduced = any(
        getattr(config, name) < getattr(paper_setting, name) for name in ("epochs", "train_per_mode", "test_per_mode")
    )
    return "smoke" if reduced else "real"


def toy_record(
    experiment: ToyExperiment,
    *,
    comparisons: dict[str, dict[str, ToyExperiment]] | None = None,
    sweep: dict | None = None,
    gaps: dict[str, dict] | None = None,
    grid: ToyLambdaGrid | None = None,
) -> dict:
    """Results per seed, their summary and the provenance record, ready to be saved as JSON.

    ``comparisons`` adds experiments run beside the main one, by section and name (e.g.
    ``{"sampled_classes": {"k = 1": ...}}``); ``sweep`` a :func:`lambda_sweep` result with its
    ``seconds``; ``gaps`` the :func:`gap_candidates`; ``grid`` a :func:`lambda_grid` (the book's
    lambda slider), under ``lambda_slider``. The wall time covers all of them. The toy
    models train and are attacked on the CPU, whatever else the machine has.
    """
    seconds = experiment.seconds
    record = run_record(
        experiment.config_dict(),
        kind=toy_kind(experiment.config),
        wall_seconds=0.0,
        started=experiment.started,
        device="cpu",
    )
    record["summary"] = experiment.summary()
    record["per_seed"] = {str(r.seed): r.metrics for r in experiment.per_seed}
    record["paper"] = PAPER_RESULTS
    for section, experiments in (comparisons or {}).items():
        record[section] = {name: e.summary() for name, e in experiments.items()}
        seconds += sum(e.seconds for e in experiments.values())
    if sweep is not None:
        record["lambda_sweep"] = sweep
        seconds += sweep["seconds"]
    if gaps:
        record["gap_candidates"] = gaps
        seconds += sum(g["seconds"] for g in gaps.values())
    if grid is not None:
        record["lambda_slider"] = grid.record()
        seconds += grid.seconds
    record["wall_seconds"] = round(seconds, 3)
    return record


def lambda_sweep(config: ToyConfig, lams: list[float], sources: list[str], seed: int = 0) -> dict:
    """PAG models of one seed over a grid of lambdas and sources.

    Returns ``{"seed", "lams", "results": {source: {"clean": [...], "pgd": [...]}}, "seconds"}``.
    lambda = 0 is the vanilla model, the same for every source, so it is trained once. All the
    grid's models train together (:func:`train_toy_models`).
    """
    config.validate()
    for source in sources:
        check_choice("source", source, MODEL_FREE_SOURCES)
    start = time.perf_counter()
    vanilla = ToyMember(seed, 0.0, config.source)
    grid = {(source, lam): vanilla if lam == 0 else ToyMember(seed, lam, source) for source in sources for lam in lams}
    members = list(dict.fromkeys(grid.values()))  # unique, in order
    models = dict(zip(members, train_toy_models(members, config, progress=False)))
    _, (x_test, y_test) = toy_split(config, seed)
    attack = config.attack()
    metrics = {m: evaluate_toy_model(model, x_test, y_test, attack) for m, model in models.items()}
    results = {
        source: {key: [metrics[grid[(source, lam)]][key] for lam in lams] for key in ("clean", "pgd")}
        for source in sources
    }
    return {"seed": seed, "lams": list(lams), "results": results, "seconds": round(time.perf_counter() - start, 3)}


@dataclass
class ToyLambdaGrid:
    """The models of one seed over a grid of lambdas, and each model's metrics on the seed's test set.

    Everything but lambda is ``config``'s (its source and gradient kind, data sizes, training
    length, attack); ``metrics[i]`` holds TOY_METRICS for ``lams[i]``.
    """

    config: ToyConfig
    seed: int
    lams: list[float]
    models: list[ToyMLP]
    metrics: list[dict[str, float]]
    test: tuple[Tensor, Tensor]
    seconds: float

    def series(self, metric: str) -> list[float]:
        return [m[metric] for m in self.metrics]

    def record(self) -> dict:
        """What a run record keeps: the grid's own parameters and its metrics per lambda."""
        return {
            "seed": self.seed,
            "lams": list(self.lams),
            "source": self.config.source,
            "gradient": self.config.gradient,
            "results": {k: self.series(k) for k in TOY_METRICS},
            "seconds": round(self.seconds, 3),
        }


def check_lambda_grid(lams: list[float]) -> list[float]:
    """A slider's lambdas: at least two, each >= 0, strictly increasing."""
    if isinstance(lams, (str, bytes)) or len(lams) < 2:
        raise ConfigError(f"the lambda grid needs at least two values, such as [0.0, 1.0]; got {lams!r}")
    values = [check_nonnegative("lambda", lam) for lam in lams]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ConfigError(f"the lambda grid must increase strictly; got {lams!r}")
    return values


def lambda_grid(config: ToyConfig, lams: list[float], seed: int = 0) -> ToyLambdaGrid:
    """Train the models of ``seed`` for every lambda of ``lams`` together, then attack and score each.

    lambda = 0 is the vanilla model. Each model gets its clean and PGD accuracy and its PAG
    score (:func:`manifold_alignment`) on ``seed``'s test set.
    """
    config.validate()
    lams = check_lambda_grid(lams)
    start = time.perf_counter()
    members = [ToyMember(seed, lam, config.source) for lam in lams]
    models = train_toy_models(members, config, progress=False)
    (x_train, y_train), (x_test, y_test) = toy_split(config, seed)
    attack = config.attack()
    metrics = [
        {
            # A random-start attack draws from the seed, not the global RNG, so that its numbers repeat.
            **evaluate_toy_model(model, x_test, y_test, attack, generator=torch.Generator().manual_seed(seed)),
            "alignment": manifold_alignment(model, x_test, y_test, x_train, y_train),
        }
        for model in models
    ]
    return ToyLambdaGrid(
        config=config,
        seed=seed,
        lams=lams,
        models=models,
        metrics=metrics,
        test=(x_test, y_test),
        seconds=time.perf_counter() - start,
    )


def _spread(experiment_per_seed: list[ToySeedResult], model: str) -> dict[str, float]:
    values = [r.metrics[model]["pgd"] for r in experiment_per_seed]
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "zero": sum(v == 0 for v in values),
    }


def gap_candidates(experiment: ToyExperiment, *, longer_epochs: int = 300, progress: bool = False) -> dict[str, dict]:
    """What moves PGD accuracy, measured on ``experiment``'s seeds, one candidate at a time.

    The paper reports one seed; ours differ from it, and these are the candidate reasons we can
    measure (each changes one thing and keeps everything else of ``experiment``):

    * ``"as run"``: the experiment itself, its spread over seeds;
    * ``"attack with random start"`` / ``"attack, 100 steps of 0.5"``: the same models under a
      differently configured PGD;
    * ``"fresh test points"``: the same models on another draw of the test set;
    * ``f"{longer_epochs} epochs"``: models trained longer (a new batched training).

    Returns ``{candidate: {"vanilla": spread, "pag": spread, "seconds": s}}``, where a spread is
    the mean, min and max PGD accuracy over seeds and the number of seeds at exactly 0.
    """
    config = experiment.config
    results = {
        "as run": {
            "vanilla": _spread(experiment.per_seed, "vanilla"),
            "pag": _spread(experiment.per_seed, "pag"),
            "seconds": 0.0,
        }
    }

    def reevaluate(name: str, attack: PGD, fresh_test: bool = False) -> None:
        start = time.perf_counter()
        per_seed = []
        for r in experiment.per_seed:
            x_test, y_test = r.test
            if fresh_test:  # same distribution, another draw: a generator no other part of the code uses
                x_test, y_test = make_toy_data(config.test_per_mode, torch.Generator().manual_seed(10_000 + r.seed))
            # The starts of a random-start attack come from the seed, never the global RNG: a
            # rebuilt record then repeats its numbers.
            metrics = {
                m: evaluate_toy_model(model, x_test, y_test, attack, generator=torch.Generator().manual_seed(r.seed))
                for m, model in r.models.items()
            }
            per_seed.append(replace(r, metrics=metrics))
        results[name] = {m: _spread(per_seed, m) for m in ("vanilla", "pag")}
        results[name]["seconds"] = time.perf_counter() - start

    reevaluate("attack with random start", replace(config, attack_random_start=True).attack())
    reevaluate("attack, 100 steps of 0.5", replace(config, attack_steps=100, attack_step_size=0.5).attack())
    reevaluate("fresh test points", config.attack(), fresh_test=True)
    longer = run_toy_experiment(replace(config, epochs=longer_epochs), progress=progress)
    results[f"{longer_epochs} epochs"] = {m: _spread(longer.per_seed, m) for m in ("vanilla", "pag")}
    results[f"{longer_epochs} epochs"]["seconds"] = longer.seconds
    return results
