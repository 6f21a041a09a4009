"""Stored evaluations run in chunks: a killed evaluation resumes from its stored chunks, and the
chunks' results join into those of the whole subset."""

import json
from statistics import NormalDist
from types import SimpleNamespace

import pytest
import torch
from tiny_models import trained_image_model

from pagcore.base.deadline import Deadline
from pagcore.data import synthetic_dataset
from pagcore.evaluate.autoattack import AutoAttackConfig
from pagcore.evaluate.checklist import ChecklistConfig, concatenate_measurements, judge_checklist, measure_checklist
from pagcore.evaluate.stored import (
    CHUNK_IMAGES,
    FOLDER,
    PARTIAL,
    BudgetConfig,
    Job,
    _combine_autoattack,
    _combine_pgd,
    _run_job,
    evaluate_stored_run,
)
from pagcore.orchestrate.evaluations import SUBSETS, evaluation_plan
from pagcore.store.runs import RunStore

IMAGES = 2 * CHUNK_IMAGES["cifar10"] + CHUNK_IMAGES["cifar10"] // 2  # three chunks, the last one short


def counting_job(seen: list, fail_at: int | None = None) -> Job:
    """A PGD-shaped job whose "measurement" counts the images of its chunk and notes its seed."""

    def measure(x, y, seed):
        if fail_at is not None and len(seen) == fail_at:
            raise KeyboardInterrupt("the session ended")
        seen.append(seed)
        return {"clean": len(x), "robust": int((y == 0).sum()), "images": len(x)}

    settings = {"norm": "linf", "what": "counting", "chunk_images": CHUNK_IMAGES["cifar10"]}
    return Job("pgd20", settings, measure, _combine_pgd)


def test_a_killed_evaluation_resumes_from_its_stored_chunks(tmp_path):
    run = SimpleNamespace(path=tmp_path, name="a-run")
    x, y = torch.zeros(IMAGES, 1), (torch.arange(IMAGES) % 4 != 0).long()
    first: list = []
    with pytest.raises(KeyboardInterrupt):
        _run_job(run, counting_job(first, fail_at=2), x, y, 7, "cpu", Deadline.after(None), False)
    job = counting_job([])
    partial_folder = tmp_path / FOLDER / PARTIAL / job.key
    assert sorted(p.name for p in partial_folder.glob("*.json")) == ["0000.json", "0001.json"]
    assert not (tmp_path / FOLDER / f"{job.key}.json").exists()  # no result until every chunk is in

    second: list = []
    line = _run_job(run, counting_job(second), x, y, 7, "cpu", Deadline.after(None), False)
    assert line["created"] and len(second) == 1 and second[0] != first[0]  # only the third chunk, with its own seed
    stored = json.loads((tmp_path / FOLDER / f"{job.key}.json").read_text())
    assert stored["results"] == {"clean": 1.0, "robust": int((y == 0).sum()) / IMAGES, "images": IMAGES}
    assert not (tmp_path / FOLDER / PARTIAL).exists()  # chunks are dropped once combined


def test_an_evaluation_out_of_time_stops_before_its_next_chunk(tmp_path):
    run = SimpleNamespace(path=tmp_path, name="a-run")
    x, y = torch.zeros(IMAGES, 1), torch.zeros(IMAGES, dtype=torch.long)
    seen: list = []
    line = _run_job(run, counting_job(seen), x, y, 0, "cpu", deadline=Deadline.after(0), progress=False)
    assert line["unfinished"] == "0/3 chunks" and seen == []


def test_autoattack_chunks_join_with_attacks_the_package_skipped_counted_as_zero():
    settings = AutoAttackConfig("linf", 8 / 255, attacks=("apgd-ce", "square"))
    common = {"max_perturbation": 0.03, "seconds": 1.0, "settings": settings.settings()}
    first = {
        **common,
        "images": 100,
        "clean": 0.5,
        "robust_mask": [True] * 30 + [False] * 70,
        "after_attack": {"apgd-ce": 0.4, "square": 0.3},
        "flags": ["a warning"],
    }
    # Nothing left after APGD-CE: the package breaks off and never logs Square.
    second = {
        **common,
        "images": 50,
        "clean": 0.2,
        "robust_mask": [False] * 50,
        "after_attack": {"apgd-ce": 0.0},
        "flags": ["a warning"],
    }
    joined = _combine_autoattack(settings, [first, second])
    assert joined["images"] == 150 and joined["robust"] == pytest.approx(30 / 150)
    assert joined["clean"] == pytest.approx((50 + 10) / 150)
    assert joined["after_attack"] == pytest.approx({"apgd-ce": 40 / 150, "square": 30 / 150})
    assert joined["flags"] == ["a warning"] and len(joined["robust_mask"]) == 150


def test_checklist_measurements_of_two_chunks_join_into_those_of_the_whole():
    model, x, y = trained_image_model(seed=0)
    fast = ChecklistConfig(
        curve_steps=3, baseline_steps=3, strong_steps=3, strong_restarts=1, targeted_iterations=3, square_queries=20
    )
    whole = measure_checklist(model, x, y, norm="l2", eps=1.0, source=model, settings=fast)
    halves = [
        measure_checklist(model, x[s], y[s], norm="l2", eps=1.0, source=model, settings=fast)
        for s in (slice(0, 40), slice(40, None))
    ]
    joined = concatenate_measurements(halves)
    assert set(joined) == set(whole)
    assert [len(mask) for mask in joined["curve"]] == [len(x)] * len(fast.eps_multipliers)
    for key in ("baseline", "strong", "square", "transfer", "gradient_finite", "gradient_zero"):
        assert len(joined[key]) == len(x), key
    # What does not depend on random starts is identical, image by image.
    assert joined["curve"][0] == whole["curve"][0]
    assert joined["gradient_finite"] == whole["gradient_finite"] and joined["gradient_zero"] == whole["gradient_zero"]
    assert joined["gradient_norm"] == pytest.approx(whole["gradient_norm"], rel=1e-5)
    verdicts = {r.name: r for r in judge_checklist(joined, norm="l2", eps=1.0, settings=fast)}
    assert verdicts["eps_monotone"].numbers["accuracy"][0] == sum(whole["curve"][0]) / len(x)
    assert verdicts["transfer"].passed is not None


def test_without_a_source_model_the_joined_transfer_measurement_stays_absent():
    parts = [
        {"curve": [[True]], "transfer": None, "square": [True]},
        {"curve": [[False]], "transfer": None, "square": [False]},
    ]
    joined = concatenate_measurements(parts)
    assert joined == {"curve": [[True, False]], "transfer": None, "square": [True, False]}


def fake_run(name, linf=0.0):
    return SimpleNamespace(name=name, metrics={"linf": linf})


def test_the_plan_puts_vanilla_the_best_pag_row_and_rigd_first_on_the_large_subset():
    table = {
        "vanilla": fake_run("v"),
        "one_image": fake_run("one", linf=0.10),
        "class_mean": fake_run("mean", linf=0.19),
        "nearest_neighbor": None,  # not trained yet
        "rigd_linf": fake_run("rigd"),
        "rigd_l2": None,
        "adversarial_linf": fake_run("teacher"),
        "adversarial_l2": None,
    }
    extra = [fake_run("seed-2"), fake_run("lam-0.1"), table["vanilla"]]
    plan = [(run.name, size) for run, size in evaluation_plan(table, extra)]
    LARGE_SUBSET, STANDARD_SUBSET = SUBSETS["cifar10"]
    assert plan == [
        ("v", LARGE_SUBSET),
        ("mean", LARGE_SUBSET),  # higher L-inf accuracy than one image
        ("rigd", LARGE_SUBSET),
        ("one", STANDARD_SUBSET),
        ("teacher", STANDARD_SUBSET),
        ("lam-0.1", STANDARD_SUBSET),  # the rest by name, each once
        ("seed-2", STANDARD_SUBSET),
    ]


class ConstantClassifier(torch.nn.Module):
    """Votes for class ``c`` whatever the input: every noise draw agrees."""

    def __init__(self, c: int, classes: int = 10):
        super().__init__()
        self.logits = torch.nn.functional.one_hot(torch.tensor(c), classes).float()

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_certification_of_a_noise_trained_run_is_stored_with_certified_accuracy_per_radius(tmp_path):
    data = synthetic_dataset("cifar10", 16, 30, seed=0)
    store = RunStore(tmp_path)
    noisy = store.create("noise", {"dataset": "cifar10", "objective": "gaussian_noise", "noise_sigma": 0.25})
    (line,) = evaluate_stored_run(noisy, ConstantClassifier(3), data, ["certify"], budgets=BudgetConfig.for_tests())
    results = json.loads(open(line["path"]).read())["results"]
    share = (data.y_test == 3).float().mean().item()
    # All n = 100 votes agree: the Clopper-Pearson bound is alpha^(1/n), the radius σ Φ⁻¹ of it (0.375).
    radius = 0.25 * NormalDist().inv_cdf(0.001 ** (1 / 100))
    assert results["radius"] == pytest.approx([radius] * 30)
    assert results["certified_accuracy"]["0"] == pytest.approx(share)
    assert results["certified_accuracy"]["0.25"] == pytest.approx(share) and results["certified_accuracy"]["0.5"] == 0
    assert results["abstained"] == 0 and results["images"] == 30
    vanilla = store.create("vanilla", {"dataset": "cifar10", "objective": "cross_entropy"})
    (skipped,) = evaluate_stored_run(
        vanilla, ConstantClassifier(3), data, ["certify"], budgets=BudgetConfig.for_tests()
    )
    assert "Gaussian noise" in skipped["skipped"]


def linear_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))


def test_a_noise_trained_run_is_attacked_and_pictured_through_its_smoothed_classifier(tmp_path):
    from pagcore.base.validation import ConfigError
    from pagcore.evaluate.final import load_pag_grid
    from pagcore.evaluate.stored import chosen_evaluations

    data = synthetic_dataset("cifar10", 16, 30, seed=0)
    store = RunStore(tmp_path)
    noisy = store.create("noise", {"dataset": "cifar10", "objective": "gaussian_noise", "noise_sigma": 0.25})
    model = linear_classifier()
    lines = evaluate_stored_run(noisy, model, data, ["pgd20", "pictures"], smoothed_draws=2)
    assert [line["name"] for line in lines] == ["pgd20", "pgd20", "pictures"] and all(line["created"] for line in lines)
    smoothed = chosen_evaluations(noisy, smoothed=True)
    assert set(smoothed) == {("pgd20", "linf"), ("pgd20", "l2"), ("pictures", "l2")}  # the pictures attack in l2
    assert smoothed[("pgd20", "l2")]["settings"]["smoothed"] == {"sigma": 0.25, "draws": 2}
    assert chosen_evaluations(noisy) == {}  # the base classifier's own numbers stay apart
    folder = smoothed[("pictures", "l2")]["results"]["folder"]
    assert folder == f"artifacts/{smoothed[('pictures', 'l2')]['key']}"  # named by its settings: never overwritten
    grid = load_pag_grid(noisy.path / folder)
    assert grid.shape == (4, 11, 3, 32, 32)  # the first image of four classes, itself and pushed to each class
    # Evaluated again, nothing is computed; and the noise of a chunk does not depend on what ran before.
    again = evaluate_stored_run(noisy, model, data, ["pgd20"], smoothed_draws=2)
    assert not any(line["created"] for line in again)

    vanilla = store.create("vanilla", {"dataset": "cifar10", "objective": "cross_entropy"})
    with pytest.raises(ConfigError, match="not trained with Gaussian noise"):
        evaluate_stored_run(vanilla, model, data, ["pgd20"], smoothed_draws=2)
    with pytest.raises(ConfigError, match="only pgd20, pgd100, pag_score, pictures"):
        evaluate_stored_run(noisy, model, data, ["autoattack"], smoothed_draws=2)
    with pytest.raises(ConfigError, match="smoothed classifier"):
        evaluate_stored_run(noisy, model, data, ["pictures"])


def test_a_reseeded_smoothed_classifier_draws_the_same_noise_again():
    from pagcore.paper.smoothing import SoftSmoothed

    smoothed = SoftSmoothed(linear_classifier(), sigma=0.5, m=4, seed=3)
    x = torch.rand(2, 3, 32, 32)
    first, second = smoothed(x), smoothed(x)
    assert not torch.equal(first, second)  # a fresh draw per call
    smoothed.reseed(3)
    assert torch.equal(smoothed(x), first)


def test_pgd_started_inside_the_l2_ball_is_stored_beside_the_papers_start(tmp_path):
    from pagcore.book.masking import attacks_table
    from pagcore.evaluate.stored import chosen_evaluations

    data = synthetic_dataset("cifar10", 16, 30, seed=0)
    run = RunStore(tmp_path).create("vanilla", {"dataset": "cifar10", "objective": "cross_entropy"})
    lines = evaluate_stored_run(run, linear_classifier(), data, ["pgd20", "pgd20_ball"], subset=10)
    assert sorted(line["name"] for line in lines) == ["pgd20", "pgd20", "pgd20_ball"]  # an ℓ∞ start is in its ball
    entries = chosen_evaluations(run)
    assert entries[("pgd20_ball", "l2")]["settings"]["random_start"] == "uniform in the L2 ball"
    assert entries[("pgd20", "l2")]["settings"]["random_start"].endswith("unprojected")
    table = attacks_table({"vanilla": (run, entries)}, "l2")
    assert "| PGD-20 | PGD-20 started in the ball | PGD-100×5 | AutoAttack |" in table.splitlines()[0]


def test_the_book_chooses_the_most_recent_of_two_evaluations_otherwise_alike(tmp_path):
    from pagcore.evaluate.stored import chosen_evaluations

    run = RunStore(tmp_path).create("vanilla", {"dataset": "cifar10", "objective": "cross_entropy"})
    (run.path / "evaluations").mkdir()
    for key, finished in (
        ("checks-l2-new", "2026-12-05T10:00:00+00:00"),
        ("checks-l2-old", "2026-11-23T07:59:31+00:00"),
    ):
        settings = {"budgets": "real", "norm": "l2", "subset": {"size": 1000}}
        entry = {"key": key, "name": "checks", "settings": settings, "provenance": {"finished": finished}}
        (run.path / "evaluations" / f"{key}.json").write_text(json.dumps(entry))
    assert chosen_evaluations(run)[("checks", "l2")]["key"] == "checks-l2-new"


def test_an_evaluation_can_keep_to_the_threat_model_a_run_was_trained_for(tmp_path):
    from pagcore.base.validation import ConfigError
    from pagcore.evaluate.stored import chosen_evaluations

    data = synthetic_dataset("cifar10", 16, 30, seed=0)
    run = RunStore(tmp_path).create("adversarial", {"dataset": "cifar10", "objective": "adversarial"})
    lines = evaluate_stored_run(run, linear_classifier(), data, ["pgd20", "pgd20_ball"], subset=10, threats=["l2"])
    assert sorted(line["name"] for line in lines) == ["pgd20", "pgd20_ball"]
    assert set(chosen_evaluations(run)) == {("pgd20", "l2"), ("pgd20_ball", "l2")}
    for threats in ([], "l2", ["linf", "l3"]):  # refused before anything is attacked
        with pytest.raises(ConfigError, match="threats must be"):
            evaluate_stored_run(run, linear_classifier(), data, ["pgd20"], subset=10, threats=threats)
    assert len(list((run.path / FOLDER).glob("*.json"))) == 2
