"""Extra evaluations of a stored run: PGD-20, PGD-100, AutoAttack, the gradient-masking checks, the PAG score.

Results go to ``<run>/evaluations/<key>.json``, beside the run's training metrics, one file per
evaluation *settings key*: a readable prefix plus a hash of everything that defines the
numbers (attack settings, radius, the test subset, the package version, reference models).
So:

* the run's identity (``params.json``), record and ``metrics.json`` are never touched;
* evaluating again with the same settings finds the file and computes nothing (idempotent);
  different settings, e.g. another subset, get another file, never overwrite one;
* each file is written atomically, so an interrupted evaluation leaves no half file;
* an evaluation runs in chunks of :data:`CHUNK_IMAGES` images (per dataset), each stored under
  ``partial/<key>/`` as soon as it is done: a killed evaluation (or one stopped by
  its ``deadline``) goes on from its first missing chunk, and the chunks are combined into the
  evaluation's file, then dropped, once all are in.

The test subset is fixed and seeded: ``size`` images drawn without replacement from the
run's test set by a generator seeded with ``seed``, in increasing index order; its size,
seed and a SHA-256 of its indices are stored with the numbers.

Radii: the ``pgd20``/``pgd100`` entries use the paper's PGD radii (L-inf 0.031, see
:data:`pagcore.evaluate.final.PAPER_PGD_EPS`) so they compare with its tables; ``autoattack`` and
``checks`` use the standard 8/255 (:data:`pagcore.evaluate.final.STANDARD_EPS`). Every file says
which in ``settings["radius"]``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial

import torch
from torch import Tensor, nn

from pagcore.base.deadline import Deadline
from pagcore.base.progress import progress_bar
from pagcore.base.seeds import derived_seed
from pagcore.base.validation import ConfigError, check_choices, check_positive_int
from pagcore.data import ImageDataset, as_float
from pagcore.evaluate.autoattack import AutoAttackConfig, run_autoattack
from pagcore.evaluate.checklist import (
    ChecklistConfig,
    concatenate_measurements,
    judge_checklist,
    measure_checklist,
    tally,
)
from pagcore.evaluate.final import (
    PAPER_PGD_EPS,
    PICTURE_EPS,
    STANDARD_EPS,
    EvaluationConfig,
    evaluate,
    first_of_each_class,
    pag_pictures,
    picture_attack,
    save_pag_grid,
)
from pagcore.evaluate.pag_score import gradient_alignment, score_alignment, targeted_confidence
from pagcore.paper.attacks import PGD, THREATS
from pagcore.paper.smoothing import ABSTAIN, SoftSmoothed, certify
from pagcore.store.provenance import device_description, running_revision, utc_now, write_json_atomic
from pagcore.store.runs import Run, parameter_hash

ATTACKS = ("pgd20", "pgd20_ball", "pgd100", "autoattack")
EVALUATIONS = (*ATTACKS, "checks", "pag_score", "score_alignment", "certify", "pictures")
"""Every stored evaluation: the attacks, the gradient-masking checklist, the PAG score against a
robust reference and against a denoiser's score-based targets, the certification of a
noise-trained classifier's smoothed version (randomized smoothing), and the PAG pictures of that
smoothed classifier."""

SMOOTHED_EVALUATIONS = ("pgd20", "pgd100", "pag_score", "pictures")
"""What runs on the soft smoothed classifier of a noise-trained run (``smoothed_draws``): the
attacks whose gradients Monte Carlo estimates serve (Salman et al.), the PAG score, and the
pictures Kaur, Cohen & Lipton look at. AutoAttack and the checklist assume a deterministic model."""

TABLE_EVALUATIONS = (*ATTACKS, "checks", "pag_score")
"""What every run of a results table gets. The score alignment needs a denoiser and the
certificate a run trained with Gaussian noise, so they are asked for by name."""

CERTIFY_BATCH = 500
"""Noise draws per forward pass of CERTIFY: they come from one stream, so the batch fixes the draws."""

CERTIFIED_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The ℓ2 radii at which certified accuracy is reported (Cohen et al.'s, 0.5 the book's ℓ2 radius)."""
FOLDER = "evaluations"


@dataclass(frozen=True)
class EvaluationSubset:
    """A fixed, seeded subset of a test set (see the module docstring)."""

    indices: Tensor
    seed: int
    of: int

    @classmethod
    def draw(cls, total: int, size: int | None, seed: int = 0) -> EvaluationSubset:
        if size is None or size >= total:
            return cls(torch.arange(total), seed, total)
        check_positive_int("subset", size)
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        return cls(order[:size].sort().values, seed, total)

    def record(self) -> dict:
        digest = hashlib.sha256(",".join(map(str, self.indices.tolist())).encode()).hexdigest()
        return {"size": len(self.indices), "of": self.of, "seed": self.seed, "indices_sha256": digest}


@dataclass(frozen=True)
class BudgetConfig:
    """How much work each evaluation does. The defaults are the real settings; :meth:`for_tests`
    shrinks them (and its results are labelled reduced), never for numbers in the book."""

    autoattack_iterations: int | None = None  # None: AutoAttack's standard 100
    square_queries: int | None = None  # None: AutoAttack's standard 5,000
    checklist: ChecklistConfig = ChecklistConfig()
    # Targeted pictures cost (C - 1) attacks of ``targeted_steps`` steps per image, so the
    # confidence score uses the first ``targeted_images`` images of the subset.
    targeted_images: int = 100
    targeted_steps: int = 60
    # A smoothed classifier's every step costs m passes of its base classifier: fewer targeted images.
    smoothed_targeted_images: int = 20
    # CERTIFY of randomized smoothing: n0 selection draws, n estimation draws, failure rate alpha.
    # Cohen et al. use n = 100,000; two CPU cores afford 10,000 per image.
    certify_n0: int = 100
    certify_n: int = 10_000
    certify_alpha: float = 0.001

    @classmethod
    def for_tests(cls) -> BudgetConfig:
        return cls(
            autoattack_iterations=5,
            square_queries=50,
            checklist=ChecklistConfig(
                eps_multipliers=(0.0, 1.0, 32.0),
                curve_steps=3,
                baseline_steps=3,
                strong_steps=5,
                strong_restarts=2,
                targeted_iterations=5,
                square_queries=50,
            ),
            targeted_images=4,
            targeted_steps=3,
            smoothed_targeted_images=2,
            certify_n0=10,
            certify_n=100,
        )


def evaluation_key(name: str, settings: dict) -> str:
    return f"{name}-{settings.get('norm', 'all')}-{parameter_hash(settings)}"


def stored_evaluations(run: Run) -> dict[str, dict]:
    """Every stored evaluation of ``run``, by key."""
    folder = run.path / FOLDER
    if not folder.exists():
        return {}
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def chosen_evaluations(run: Run, smoothed: bool = False) -> dict[tuple[str, str], dict]:
    """One stored evaluation per (name, norm) for the book: real budgets before reduced ones, then
    (for a smoothed classifier) the most noise draws, then the largest subset, then the most recent
    (an evaluation run again with a stronger attack supersedes the one before). ``norm`` is ``"all"``
    for the PAG score. Evaluations of the run's smoothed classifier are chosen only with
    ``smoothed``, and then only they."""
    chosen: dict[tuple[str, str], dict] = {}

    def rank(entry: dict) -> tuple:
        settings = entry["settings"]
        draws = (settings.get("smoothed") or {}).get("draws", 0)
        finished = entry.get("provenance", {}).get("finished", "")
        return (settings["budgets"] == "real", draws, settings["subset"]["size"], finished)

    for entry in stored_evaluations(run).values():
        if bool(entry["settings"].get("smoothed")) != smoothed:
            continue
        slot = (entry["name"], entry["settings"].get("norm", "all"))
        if slot not in chosen or rank(entry) > rank(chosen[slot]):
            chosen[slot] = entry
    return chosen


# Evaluations run in chunks of this many images, each stored as it finishes, so that a process
# killed mid-way (a session's end, a cluster's time limit) loses at most one chunk's work. Chunk
# i of a subset draws its random starts (and AutoAttack's seed) from ``chunk_seed(seed, i)``;
# the chunk size is therefore part of every settings key. An STL-10 image has nine times the
# pixels of a CIFAR-10 one and its model twice the width: AutoAttack and the checklist spend
# about ten times as long on it (half a minute per robust image on two cores), hence smaller chunks.
CHUNK_IMAGES: dict[str, int] = {"cifar10": 100, "stl10": 20}
PARTIAL = "partial"


def chunk_seed(seed: int, chunk: int) -> int:
    return 1000 * seed + chunk


@dataclass
class Job:
    """One evaluation: ``measure(x, y, seed)`` on a chunk of the subset returns a JSON-ready
    partial result, ``combine(partials)`` joins the chunks' partials (in order) into the
    stored results. A job that is not ``chunked`` measures the whole subset at once."""

    name: str
    settings: dict
    measure: Callable[[Tensor, Tensor, int], dict]
    combine: Callable[[list[dict]], dict]
    chunked: bool = True

    @property
    def key(self) -> str:
        return evaluation_key(self.name, self.settings)


def evaluate_stored_run(
    run: Run,
    model: nn.Module,
    data: ImageDataset,
    evaluations: Sequence[str],
    *,
    subset: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    source: tuple[str, nn.Module] | None = None,
    reference: tuple[str, nn.Module] | None = None,
    denoiser: tuple[str, nn.Module, float] | None = None,
    budgets: BudgetConfig = BudgetConfig(),
    smoothed_draws: int | None = None,
    threats: Sequence[str] = THREATS,
    progress: bool = False,
    deadline: Deadline | None = None,
) -> list[dict]:
    """Run the named ``evaluations`` that are not stored yet, the attacks and checklists in each of
    ``threats``; returns one line per evaluation:
    ``{"name", "key", "path", "created"}``, ``{"name", "key", "unfinished": "i/n chunks"}``
    when ``deadline`` passed first (run it again to go on), or ``{"name", "skipped": reason}``.

    ``source`` (name, model) is the vanilla model for the transfer check; ``reference`` (name,
    model) the adversarially trained model the PAG score compares with; ``denoiser`` (name, model,
    σ) the denoiser whose score-based targets the score alignment compares with. With
    ``smoothed_draws`` m, the evaluations run on the soft smoothed classifier of a noise-trained run,
    each forward pass averaging m noise draws (:class:`SoftSmoothed`)."""
    unknown = [e for e in evaluations if e not in EVALUATIONS]
    if unknown:
        raise ConfigError(f"evaluations must be among {', '.join(EVALUATIONS)}; got {', '.join(unknown)}")
    threats = check_choices("threats", threats, THREATS)
    smoothing = _smoothing(run, evaluations, smoothed_draws)
    device = torch.device(device)
    chosen = EvaluationSubset.draw(len(data.x_test), subset, seed)
    x = as_float(data.x_test[chosen.indices].to(device))
    y = data.y_test[chosen.indices].to(device)
    common = {
        "subset": chosen.record(),
        "seed": seed,
        "chunk_images": CHUNK_IMAGES[data.name],
        "dataset": data.name,
        "budgets": "real" if budgets == BudgetConfig() else "reduced (tests only)",
    }
    if smoothing is not None:
        model = SoftSmoothed(model, smoothing["sigma"], smoothing["draws"], seed=seed)
        common["smoothed"] = smoothing
        budgets = replace(budgets, targeted_images=budgets.smoothed_targeted_images)
    jobs: list[Job] = []
    for norm in (t for t in THREATS if t in threats):
        jobs += [
            _pgd_job(model, name, norm, common, device)
            for name, (*_, start) in PGD_RUNS.items()
            if name in evaluations and (norm == "l2" or start == "trades")  # an ℓ∞ start is always in its ball
        ]
        if "autoattack" in evaluations:
            jobs.append(_autoattack_job(model, norm, seed, budgets, common, device))
        if "checks" in evaluations:
            jobs.append(_checklist_job(model, norm, source, budgets, common, device))
    lines: list[dict] = []
    if "pag_score" in evaluations and reference is None:
        lines.append({"name": "pag_score", "skipped": "no adversarially trained reference run"})
    elif "pag_score" in evaluations:
        jobs.append(_pag_score_job(model, reference, data.num_classes, budgets, common))
    if "score_alignment" in evaluations and denoiser is None:
        lines.append({"name": "score_alignment", "skipped": "no denoiser given"})
    elif "score_alignment" in evaluations:
        jobs.append(_score_alignment_job(model, denoiser, data.num_classes, common))
    noise_sigma = run.params.get("noise_sigma")
    if "certify" in evaluations and run.params.get("objective") != "gaussian_noise":
        lines.append({"name": "certify", "skipped": "not a base classifier trained with Gaussian noise"})
    elif "certify" in evaluations:
        jobs.append(_certify_job(model, noise_sigma, budgets, common, device))
    if "pictures" in evaluations:
        jobs.append(_pictures_job(run, model, data, common, device))

    deadline = deadline or Deadline.after(None)
    for job in jobs:
        lines.append(_run_job(run, job, x, y, seed, device, deadline, progress))
    return lines


def _smoothing(run: Run, evaluations: Sequence[str], draws: int | None) -> dict | None:
    """The smoothing the evaluations run under ({"sigma", "draws"}), None without ``draws``;
    checked before any compute."""
    if draws is None:
        if "pictures" in evaluations:
            raise ConfigError(
                "pictures here are a smoothed classifier's (give smoothed_draws); a model's own come from its final"
                " evaluation"
            )
        return None
    check_positive_int("smoothed_draws", draws)
    if run.params.get("objective") != "gaussian_noise":
        raise ConfigError(f"{run.name} is not trained with Gaussian noise: it has no smoothed classifier to evaluate")
    others = [e for e in evaluations if e not in SMOOTHED_EVALUATIONS]
    if others:
        raise ConfigError(
            f"on a smoothed classifier only {', '.join(SMOOTHED_EVALUATIONS)} run; not {', '.join(others)}"
        )
    return {"sigma": run.params["noise_sigma"], "draws": draws}


SMOOTHING_NOISE = 1
"""Mixed into a chunk's seed for a smoothed model's noise, which must not repeat the attack's random starts."""


def _fresh_noise(model: nn.Module, seed: int) -> None:
    """A smoothed model's noise stream starts again from the chunk's seed (nothing for a plain model)."""
    if isinstance(model, SoftSmoothed):
        model.reseed(derived_seed(seed, SMOOTHING_NOISE))


def _run_job(run: Run, job: Job, x: Tensor, y: Tensor, seed: int, device, deadline: Deadline, progress: bool) -> dict:
    """Measure the chunks not stored yet, then store the combined results and drop the chunks."""
    size = job.settings["chunk_images"]
    path = run.path / FOLDER / f"{job.key}.json"
    folder = run.path / FOLDER / PARTIAL / job.key
    if path.exists():
        _drop_chunks(run, folder)  # left by another copy of the store that finished first
        return {"name": job.name, "key": job.key, "path": str(path), "created": False}
    chunks = range(0, len(x), size) if job.chunked else range(0, 1)
    bar = progress_bar(
        enumerate(chunks),
        enabled=progress,
        desc=f"{job.name} {job.settings.get('norm', '')}",
        unit="chunk",
        total=len(chunks),
    )
    for index, start in bar:
        chunk_path = folder / f"{index:04d}.json"
        if chunk_path.exists():
            continue
        if deadline.passed():
            done = len(list(folder.glob("*.json")))
            return {"name": job.name, "key": job.key, "unfinished": f"{done}/{len(chunks)} chunks"}
        stop = start + size if job.chunked else len(x)
        began = time.perf_counter()
        partial_result = job.measure(x[start:stop], y[start:stop], chunk_seed(seed, index))
        write_json_atomic(
            chunk_path,
            {
                "partial": partial_result,
                "images": [start, min(stop, len(x))],
                "device": device_description(device),
                "git": running_revision(),
                "seconds": round(time.perf_counter() - began, 3),
            },
        )
    stored = [json.loads((folder / f"{index:04d}.json").read_text()) for index in range(len(chunks))]
    write_json_atomic(
        path,
        {
            "name": job.name,
            "key": job.key,
            "run": run.name,
            "settings": job.settings,
            "results": job.combine([chunk["partial"] for chunk in stored]),
            "provenance": {
                # Chunks may come from several sessions (or machines): all of them are named.
                "git": ", ".join(sorted({chunk["git"] for chunk in stored})),
                "torch": torch.__version__,
                "device": ", ".join(sorted({chunk["device"] for chunk in stored})),
                "finished": utc_now(),
                "seconds": round(sum(chunk["seconds"] for chunk in stored), 3),
            },
        },
    )
    _drop_chunks(run, folder)
    return {"name": job.name, "key": job.key, "path": str(path), "created": True}


def _drop_chunks(run: Run, folder) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    partial_root = run.path / FOLDER / PARTIAL
    if partial_root.exists() and not any(partial_root.iterdir()):
        partial_root.rmdir()


# One builder per evaluation: each returns a Job whose ``measure`` is a closure over the model
# and settings, with the same signature (images, labels, seed) -> JSON-ready partial result.

PGD_RUNS = {"pgd20": (20, 1, False, "trades"), "pgd20_ball": (20, 1, False, "ball"), "pgd100": (100, 5, True, "trades")}
"""steps, restarts, keep the best iterate, ℓ2 start: the paper's PGD-20; the same in ℓ2 started inside
the ball (the paper's per-pixel start lies outside it, which weakens the attack); a stronger PGD-100 x 5."""


def _pgd_job(model: nn.Module, name: str, norm: str, common: dict, device) -> Job:
    steps, restarts, best, start = PGD_RUNS[name]
    eps = PAPER_PGD_EPS[common["dataset"]][norm]
    attack = PGD.paper_real_data(norm, eps, steps, restarts=restarts, keep_best=best, l2_start=start)

    def measure(x, y, seed) -> dict:
        _fresh_noise(model, seed)
        accuracies = evaluate(model, x, y, {"robust": attack}, device=device, seed=seed, progress=False)
        return {key: round(accuracies[key] * len(x)) for key in ("clean", "robust")} | {"images": len(x)}

    settings = {**attack.settings(), "radius": "paper (Section 5.2)", **common}
    return Job(name, settings, measure, _combine_pgd)


def _autoattack_job(model: nn.Module, norm: str, seed: int, budgets: BudgetConfig, common: dict, device) -> Job:
    aa = AutoAttackConfig(
        norm,
        STANDARD_EPS[common["dataset"]][norm],
        seed=seed,
        apgd_iterations=budgets.autoattack_iterations,
        fab_iterations=budgets.autoattack_iterations,
        square_queries=budgets.square_queries,
    )

    def measure(x, y, chunk_seed) -> dict:
        return run_autoattack(model, x, y, replace(aa, seed=chunk_seed), device=device)

    settings = {**aa.settings(), "radius": "standard (RobustBench)", **common}
    return Job("autoattack", settings, measure, partial(_combine_autoattack, aa))


def _checklist_job(
    model, norm: str, source: tuple[str, nn.Module] | None, budgets: BudgetConfig, common: dict, device
) -> Job:
    eps, checklist = STANDARD_EPS[common["dataset"]][norm], budgets.checklist
    source_model = source[1] if source else None

    def measure(x, y, seed) -> dict:
        return measure_checklist(
            model, x, y, norm=norm, eps=eps, source=source_model, settings=checklist, device=device, seed=seed
        )

    settings = {
        **checklist.settings(),
        "norm": norm,
        "eps": eps,
        "radius": "standard (RobustBench)",
        "source": source[0] if source else None,
        **common,
    }
    return Job("checks", settings, measure, partial(_combine_checks, norm, eps, checklist))


def _pag_score_job(
    model, reference: tuple[str, nn.Module], num_classes: int, budgets: BudgetConfig, common: dict
) -> Job:
    eps = PICTURE_EPS[common["dataset"]]

    def measure(x, y, seed) -> dict:
        _fresh_noise(model, seed)
        few = slice(0, budgets.targeted_images)
        return {
            "gradient_alignment": gradient_alignment(model, reference[1], x, num_classes=num_classes),
            "targeted_confidence": targeted_confidence(
                model, reference[1], x[few], y[few], num_classes=num_classes, eps=eps, steps=budgets.targeted_steps
            ),
        }

    settings = {
        "score": "gradient alignment and targeted confidence",
        "reference": reference[0],
        "targeted_eps": eps,
        "targeted_images": budgets.targeted_images,
        "targeted_steps": budgets.targeted_steps,
        **common,
    }
    return Job("pag_score", settings, measure, lambda partials: partials[0], chunked=False)


def _score_alignment_job(model, denoiser: tuple[str, nn.Module, float], num_classes: int, common: dict) -> Job:
    name, score_model, sigma = denoiser

    def measure(x, y, seed) -> dict:
        return score_alignment(model, score_model, x, sigma=sigma, num_classes=num_classes, seed=seed)

    settings = {"score": "cosine with score-based targets", "denoiser": name, "sigma": sigma, **common}
    return Job("score_alignment", settings, measure, _combine_alignment)


def _combine_alignment(partials: list[dict]) -> dict:
    """The chunks' per-class means, weighted by their images."""
    images = sum(p["images"] for p in partials)
    per_class = [
        sum(p["per_class"][c] * p["images"] for p in partials) / images for c in range(len(partials[0]["per_class"]))
    ]
    return {"score": sum(per_class) / len(per_class), "per_class": per_class, "images": images}


def _certify_job(model: nn.Module, sigma: float, budgets: BudgetConfig, common: dict, device) -> Job:
    n0, n, alpha = budgets.certify_n0, budgets.certify_n, budgets.certify_alpha

    def measure(x, y, seed) -> dict:
        generator = torch.Generator(device=device).manual_seed(seed)
        answers = [
            certify(model, image, sigma, n0, n, alpha, batch_size=CERTIFY_BATCH, generator=generator) for image in x
        ]
        return {
            "predicted": [c for c, _ in answers],
            "radius": [r for _, r in answers],
            "labels": y.tolist(),
        }

    settings = {
        "smoothing": "CERTIFY (Cohen et al. 2019)",
        "sigma": sigma,
        **{"n0": n0, "n": n, "alpha": alpha, "noise_batch": CERTIFY_BATCH},
        **common,
    }
    return Job("certify", settings, measure, _combine_certify)


def _pictures_job(run: Run, model: nn.Module, data: ImageDataset, common: dict, device) -> Job:
    """The PAG pictures of the smoothed classifier, made as the final evaluation makes a model's own
    (the same test images and targeted attack), stored as a grid in an artifacts folder named by
    the evaluation's key, so that pictures of other settings never overwrite them."""
    final = (run.metrics or {}).get("settings", {})
    attack = picture_attack(data.name, final)
    chosen = first_of_each_class(data.y_test, final.get("picture_images", EvaluationConfig().picture_images))
    settings = {"pictures": "targeted PGD towards every class", **attack, **common}
    folder = run.artifacts / evaluation_key("pictures", settings)

    def measure(x, y, seed) -> dict:
        _fresh_noise(model, seed)
        grid = pag_pictures(model, data.x_test[chosen], data.num_classes, **attack, device=device)
        save_pag_grid(folder, grid, chosen)
        return {"folder": str(folder.relative_to(run.path)), "test_index": chosen.tolist()}

    return Job("pictures", settings, measure, lambda partials: partials[0], chunked=False)


def _combine_certify(partials: list[dict]) -> dict:
    """Certified accuracy at each of :data:`CERTIFIED_RADII`: the share of images whose smoothed
    prediction is right and certified at least that far; abstentions count as wrong."""
    predicted, radius, labels = ([v for p in partials for v in p[key]] for key in ("predicted", "radius", "labels"))
    right = [c == y for c, y in zip(predicted, labels)]
    certified = {f"{r:g}": sum(ok and d >= r for ok, d in zip(right, radius)) / len(labels) for r in CERTIFIED_RADII}
    return {
        "certified_accuracy": certified,
        "abstained": sum(c == ABSTAIN for c in predicted) / len(labels),
        "images": len(labels),
        "predicted": predicted,
        "radius": radius,
    }


def _combine_pgd(partials: list[dict]) -> dict:
    images = sum(p["images"] for p in partials)
    return {
        "clean": sum(p["clean"] for p in partials) / images,
        "robust": sum(p["robust"] for p in partials) / images,
        "images": images,
    }


def _combine_autoattack(settings: AutoAttackConfig, partials: list[dict]) -> dict:
    """AutoAttack's chunks joined. The package stops logging once a chunk has no robust image
    left, so an attack missing from a chunk's ``after_attack`` left 0 of its images."""
    images = sum(p["images"] for p in partials)
    mask = sum((p["robust_mask"] for p in partials), [])
    after = {
        attack: sum(p["after_attack"].get(attack, 0.0) * p["images"] for p in partials) / images
        for attack in {a for p in partials for a in p["after_attack"]}
    }
    return {
        "clean": sum(p["clean"] * p["images"] for p in partials) / images,
        "robust": sum(mask) / images,
        "after_attack": dict(sorted(after.items(), key=lambda item: -item[1])),
        "robust_mask": mask,
        "max_perturbation": max(p["max_perturbation"] for p in partials),
        "flags": list(dict.fromkeys(flag for p in partials for flag in p["flags"])),
        "images": images,
        "seconds": round(sum(p["seconds"] for p in partials), 3),
        "settings": settings.settings(),
    }


def _combine_checks(norm, eps, settings: ChecklistConfig, partials: list[dict]) -> dict:
    results = judge_checklist(concatenate_measurements(partials), norm=norm, eps=eps, settings=settings)
    return {"checks": [asdict(r) for r in results], **tally(results)}


def companions(
    store, run: Run, evaluations: Sequence[str], source_name: str | None, reference_name: str | None, device
) -> tuple[tuple[str, nn.Module] | None, tuple[str, nn.Module] | None]:
    """The (source, reference) that ``evaluations`` need for ``run``: the vanilla source of the
    checklist's transfer check and the adversarially trained reference of the PAG score; each None
    when its evaluation is not asked for (or no such run exists)."""
    source = companion_run(store, run, source_name, "cross_entropy", device) if "checks" in evaluations else None
    wanted = "pag_score" in evaluations
    reference = companion_run(store, run, reference_name, "adversarial", device) if wanted else None
    return source, reference


def companion_run(store, run: Run, chosen_name: str | None, objective: str, device) -> tuple[str, nn.Module] | None:
    """(name, model) of the run named ``chosen_name``, or else of a complete run trained on
    ``objective`` of the same dataset, scale and kind from the store (the L2 one first for
    adversarial training): the vanilla source of the transfer check, the adversarially trained
    reference of the PAG score. None if there is none."""
    if chosen_name:
        chosen = store.find(chosen_name)
    else:
        candidates = store.select(
            kind=run.kind, dataset=run.params["dataset"], scale=run.params["scale"], objective=objective
        )
        # Adversarial training with a PAG term is another model: only plain training of ``objective`` serves.
        candidates = [r for r in candidates if not r.params.get("lam")]
        others = [r for r in candidates if r.name != run.name] or candidates
        others.sort(key=lambda r: ((r.params.get("adversary") or {}).get("threat") != "l2", r.name))
        if not others:
            return None
        chosen = others[0]
    if chosen.params.get("objective") != objective:
        raise ConfigError(
            f"{chosen.name} is trained on {chosen.params.get('objective')!r}; a {objective!r} run is needed here"
        )
    return chosen.name, chosen.load_model(device=device)
