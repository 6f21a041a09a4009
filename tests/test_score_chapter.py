"""The score-based chapter reads the denoiser's quality and the runs' alignment from what is stored."""

from __future__ import annotations

import json

import pytest

from pagcore.book import score
from pagcore.book.evidence import AlignmentSpread
from pagcore.orchestrate.book_runs import SCORE_DENOISERS
from pagcore.store.runs import RunStore


def quality(accuracy: float, images: int = 200) -> dict:
    errors = {
        f"{s:g}": {"noisy": s**2, "gaussian": 0.02, "empirical": 0.03, "unconditional": 0.01, "conditional": 0.009}
        for s in (0.1, 0.2, 0.5)
    }
    return {"errors": errors, "implicit_classifier": {"accuracy": accuracy}, "test_images": images, "chance": 0.1}


@pytest.mark.parametrize(("accuracy", "knows"), [(0.35, True), (0.13, False)])
def test_targets_are_trusted_only_when_the_implicit_classifier_beats_chance(accuracy, knows):
    # Twice the sampling error of chance on 200 images is 4.2 points: 35 % passes, 13 % does not.
    beyond, sentence = score.class_information(quality(accuracy))
    assert beyond is knows
    assert ("the denoiser carries class information beyond chance" in sentence) is knows


def test_the_quality_table_and_its_reading_use_the_stored_errors():
    table = score.quality_table(quality(0.35))
    assert table.splitlines()[0] == "| estimate | σ = 0.1 | σ = 0.2 | σ = 0.5 |"
    assert "| ours, true label | 9.00 | 9.00 | 9.00 |" in table
    reading = score.quality_reading(quality(0.35), sigma=0.25)
    assert reading.startswith("At σ = 0.2, the measured level nearest the targets' 0.25, the RMS error")
    assert "is 0.095 for our denoiser with the true label" in reading  # √0.009
    assert "lie on top of each other" not in reading  # the label changes the error by 10 %
    close = quality(0.35)
    for errors in close["errors"].values():
        errors["conditional"] = 0.0098
    assert "differ by at most 2 % at any σ, so its two curves lie on top of each other" in score.quality_reading(
        close, sigma=0.25
    )


RISING = (
    "Over 4 training configurations, the Spearman rank correlation between the alignment with the score-based "
    "targets and AutoAttack ℓ2 accuracy is 1.00"
)


def store_evaluation(run, name: str, settings: dict, results: dict) -> None:
    folder = run.path / "evaluations"
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"name": name, "settings": {"budgets": "real", "subset": {"size": 100}, **settings}, "results": results}
    (folder / f"{name}-{settings.get('norm', 'all')}-{settings.get('denoiser', '')}.json").write_text(json.dumps(entry))


def test_alignment_points_need_both_measures_against_the_chosen_denoiser(tmp_path):
    store = RunStore(tmp_path)
    runs = []
    for i, (alignment, robust) in enumerate([(0.1, 0.0), (0.2, 0.1), (0.3, 0.3), (0.4, 0.35)]):
        run = store.create(f"run-{i}", {"dataset": "cifar10", "lam": i})
        store_evaluation(run, "score_alignment", {"denoiser": "d1", "sigma": 0.2}, {"score": alignment})
        store_evaluation(run, "autoattack", {"norm": "l2"}, {"robust": robust})
        runs.append(run)
    other = store.create("other", {"dataset": "cifar10"})
    store_evaluation(other, "score_alignment", {"denoiser": "d2", "sigma": 0.2}, {"score": 0.9})
    store_evaluation(other, "autoattack", {"norm": "l2"}, {"robust": 0.0})
    points = score.alignment_points([*runs, other], "d1", {"run-0": "vanilla"})
    assert points == {"vanilla": (0.1, 0.0), "run-1": (0.2, 0.1), "run-2": (0.3, 0.3), "run-3": (0.4, 0.35)}
    rising = score.alignment_verdict(points)
    assert rising.startswith(RISING)
    # A run trained on these very targets is also read apart: the claim must hold without it.
    apart = score.alignment_verdict(points, {"run-3"})
    assert apart.startswith(RISING)
    assert (
        "Without the one configuration trained on these targets, which aligns with them by construction, over 3 "
        "configurations" in apart
    )
    # Seeds of one configuration are one point, their mean: two seeds of run-3's recipe leave four points.
    seeds = {**points, "run-3, seed 1": (0.6, 0.45)}
    merged = score.alignment_verdict(seeds, (), {"run-3": "c3", "run-3, seed 1": "c3"})
    assert merged.startswith("Over 4 training configurations (5 runs, the seeds of a configuration averaged")
    assert "4 pairs" in merged
    runs[3].write_json("params.json", {"dataset": "cifar10", "lam": 2, "seed": 1})  # run-2's recipe, seed 1
    assert score.run_configurations(runs, {"run-0": "vanilla"})["run-3"] == runs[2].configuration
    assert "too few" in score.alignment_verdict(points, {"run-2", "run-3"})
    assert "disagree" not in apart
    # The best aligned run, trained on the targets, without the robustness: the trend holds only without it.
    broken = {**{f"run-{i}": (0.1 * i, 0.1 * i) for i in range(1, 6)}, "trained": (0.9, 0.0)}
    split = score.alignment_verdict(broken, {"trained"})
    assert "interval includes 0" in split and "the better aligned runs are the more robust ones" in split
    assert split.endswith("do not show that better alignment goes with more robustness.")
    assert "The claim counts only where both readings find it" in split and "Only the reading without them" in split
    # Trained runs on top of unordered ones: the trend is theirs alone.
    rest = {"a": (0.1, 0.3), "b": (0.2, 0.1), "c": (0.3, 0.25), "d": (0.4, 0.15), "e": (0.5, 0.2), "f": (0.55, 0.12)}
    top = {f"t{i}": (0.7 + 0.05 * i, 0.7 + 0.05 * i) for i in range(5)}
    assert score.alignment_verdict({**rest, **top}, set(top)).endswith("says nothing about the others.")
    # Trained runs on top of others that run the other way: reversed without them.
    falling = {k: (0.1 * i, 0.6 - 0.1 * i) for i, k in enumerate("abcdef")}
    many = {f"t{i}": (0.7 + 0.02 * i, 0.7 + 0.02 * i) for i in range(10)}
    reversed_reading = score.alignment_verdict({**falling, **many}, set(many))
    assert "Without the runs set apart the correlation is reversed" in reversed_reading
    assert "the better aligned runs are the more robust ones" in rising
    assert "not judged yet" in score.alignment_verdict(dict(list(points.items())[:2]))
    flat = {k: (a, 0.1) for k, (a, _) in points.items()}
    assert "constant" in score.alignment_verdict(flat)


def test_without_a_denoiser_the_chapter_says_it_has_no_result():
    assert "has no result" in score.finding(None, None, None, "not judged", "")
    assert "No denoiser has been trained yet" in score.denoiser_status(None)


def test_the_opening_box_line_gives_the_denoisers_class_information_and_the_alignment_claim(tmp_path):
    store = RunStore(tmp_path)
    assert "no denoiser has been trained yet" in score.box_line("cpu", str(tmp_path))
    book_denoiser = SCORE_DENOISERS["cifar10"]
    denoiser = RunStore(tmp_path / "denoisers").create(book_denoiser, {"dataset": "cifar10"})
    denoiser.write_json("record.json", {"kind": "real", "status": "complete", "sessions": [{"finished": "x"}]})
    denoiser.write_json("metrics.json", quality(0.54))
    for i, (alignment, robust) in enumerate([(0.02, 0.0), (0.07, 0.25), (0.15, 0.3), (0.16, 0.45)]):
        run = store.create(f"run-{i}", {"dataset": "cifar10", "scale": "cpu", "lam": i})
        run.write_json("record.json", {"kind": "real", "status": "complete"})
        run.write_json("metrics.json", {"clean": 0.5})
        store_evaluation(run, "score_alignment", {"denoiser": book_denoiser, "sigma": 0.2}, {"score": alignment})
        store_evaluation(run, "autoattack", {"norm": "l2"}, {"robust": robust})
    line = score.box_line("cpu", str(tmp_path))
    assert "the denoiser's implicit classifier is right on 54.0% of 200 test images (chance 10.0%)" in line
    assert "the score-based PAG row has not been trained yet" in line
    assert RISING in line
    assert "Over 4 training" not in score.box_line("paper", str(tmp_path))  # the runs are of another scale


def test_the_class_cosine_of_targets_is_one_for_a_shared_direction_and_zero_for_orthogonal_ones():
    import torch

    shared = torch.randn(1, 1, 3, 4, 4).expand(2, 5, 3, 4, 4)
    assert score.class_cosine(shared) == pytest.approx(1.0)
    orthogonal = torch.eye(48)[:10].reshape(1, 10, 3, 4, 4)
    assert score.class_cosine(orthogonal) == pytest.approx(0.0)


def test_the_targets_reading_measures_the_pictures_as_the_targets_themselves():
    import torch

    from pagcore.paper.denoiser import Denoiser, DenoiserShape

    torch.manual_seed(0)
    denoiser = Denoiser(3, 10, DenoiserShape(width=4, multipliers=(1, 2))).eval()
    with torch.no_grad():  # a fresh network is the identity in every label: give the labels some effect
        for parameter in denoiser.parameters():
            parameter.normal_(0, 0.2)
    images = torch.rand(2, 3, 8, 8)
    pictures = score.target_pictures(denoiser, images, 0.2)
    targets = score.score_targets(denoiser, images, range(2), 0.2)
    assert abs(score.class_cosine(targets)) > 0.01
    assert f"a mean cosine of {score.class_cosine(targets):.2f}" in score.targets_reading(pictures)


def test_stl10_has_a_score_based_row_only_with_a_denoiser_of_its_own(tmp_path, monkeypatch):
    from pagcore.orchestrate import book_runs

    assert "no score-based row" in score.stl10_line(RunStore(tmp_path))
    denoiser = RunStore(tmp_path / "denoisers").create("stl10-d", {"dataset": "stl10"})
    denoiser.write_json("params.json", {"dataset": "stl10", "width": 16, "multipliers": [1, 2, 2, 2], "epochs": 25})
    denoiser.write_json("record.json", {"kind": "real", "status": "complete", "sessions": [], "wall_seconds": 3300})
    denoiser.write_json("metrics.json", quality(0.3))
    line = score.stl10_line(RunStore(tmp_path))
    assert line.startswith(
        "An STL-10 denoiser is stored: a U-Net of width 16 over 4 resolutions, trained for 25 epochs"
    )
    assert "(55 minutes)" in line and "beyond chance" in line
    assert line.endswith(
        "It is not the book's STL-10 denoiser, so the STL-10 results table ({numref}`tab-stl10`) has no score-based "
        "row yet."
    )
    denoiser.write_json("metrics.json", quality(0.11))  # at chance: its targets carry no class information
    assert "not beyond chance" in score.stl10_line(RunStore(tmp_path))
    assert score.stl10_line(RunStore(tmp_path)).endswith(
        "So the STL-10 results table ({numref}`tab-stl10`) has no score-based row."
    )
    denoiser.write_json("metrics.json", quality(0.3))
    monkeypatch.setitem(book_runs.SCORE_DENOISERS, "stl10", "stl10-d")
    assert score.stl10_line(RunStore(tmp_path)).endswith("in the queue of the book's runs.")
    # Once its row is trained, the line gives its numbers and the stated λ (none is published).
    from pagcore.orchestrate.experiments import RealDataExperiment
    from pagcore.train.trainer import run_name_for

    config = RealDataExperiment("stl10", {"scale": "cpu"}).config("score", **book_runs.score_overrides("stl10"))
    row = RunStore(tmp_path).create(run_name_for(config, "real"), config.identity())
    row.write_json("record.json", {"kind": "real", "status": "complete", "sessions": [], "wall_seconds": 60})
    row.write_json("metrics.json", {"clean": 0.4, "linf": 0.12, "l2": 0.25, "test_images": 5000})
    line = score.stl10_line(RunStore(tmp_path))
    assert "Its score-based row (40 epochs at the cpu scale, λ = 1.5, the authors' CIFAR-10 value" in line
    assert line.endswith(
        "40.0% clean, 12.0% under ℓ∞ and 25.0% under ℓ2 PGD-20; the STL-10 results table ({numref}`tab-stl10`) "
        "judges it beside the paper's rows."
    )


def test_the_runs_trained_on_a_denoisers_targets_are_named_by_their_label(tmp_path):
    store = RunStore(tmp_path)
    trained = store.create("sbg", {"source": "score", "denoiser": "d1"})
    store.create("other-denoiser", {"source": "score", "denoiser": "d2"})
    store.create("class-mean", {"source": "class_mean"})
    assert score.trained_towards(store.runs(), "d1", {trained.name: "Score-based"}) == {"Score-based"}


def test_the_pictures_are_read_by_their_alignment_and_ranked_only_beyond_the_seed_spread(tmp_path):
    store = RunStore(tmp_path)
    runs = {}
    for label, alignment in {"λ = 0.1": 0.14, "λ = 0.4": 0.07, "λ = 1": 0.13}.items():
        runs[label] = store.create(label.replace(" ", ""), {"dataset": "cifar10"})
        store_evaluation(runs[label], "score_alignment", {"denoiser": "d1", "sigma": 0.2}, {"score": alignment})
    runs["not run"] = None
    narrow, wide = AlignmentSpread("One Image (cpu)", 0.008, 3), AlignmentSpread("One Image (cpu)", 0.05, 3)
    reading = score.pictures_alignment_reading(runs, "d1", narrow)
    assert "λ = 0.1: 0.140; λ = 0.4: 0.070; λ = 1: 0.130." in reading
    assert "0.008 over 3 seeds of One Image (cpu)" in reading and "more than 0.023 apart" in reading  # 2 √2 0.008
    assert "λ = 0.1 aligns best, beyond that margin over λ = 0.4, while λ = 1 cannot be told from it." in reading
    assert "no model aligns better" in score.pictures_alignment_reading(runs, "d1", wide)
    assert "no model is ranked" in score.pictures_alignment_reading(runs, "d1", None)
    assert "read the pictures by eye" in score.pictures_alignment_reading(runs, "d2", narrow)
    alone = score.pictures_alignment_reading({"λ = 1": runs["λ = 1"]}, "d1", narrow)
    assert alone.endswith("λ = 1: 0.130.")


def test_the_alignment_seed_spread_is_the_widest_over_the_seed_rows(tmp_path):
    from pagcore.orchestrate.experiments import RealDataExperiment
    from pagcore.train.trainer import run_identity, run_name_for

    store = RunStore(tmp_path)
    assert score.alignment_seed_spread("d1", "cpu", str(tmp_path)) is None
    experiment = RealDataExperiment("cifar10", {"scale": "cpu"}, store)
    # Two seeds are too few to trust a spread: one image's wide one does not count.
    rows = {"vanilla": (0.01, 0.02, 0.03), "nearest_neighbor": (0.10, 0.20, 0.30), "one_image": (0.5, 0.9)}
    for row, values in rows.items():
        for seed, alignment in enumerate(values):
            config = experiment.config(row, seed=seed)
            run = store.create(run_name_for(config, "real"), run_identity(config, "real"))
            run.write_json("record.json", {"kind": "real", "status": "complete"})
            run.write_json("metrics.json", {"clean": 0.5})
            store_evaluation(run, "score_alignment", {"denoiser": "d1", "sigma": 0.2}, {"score": alignment})
    spread = score.alignment_seed_spread("d1", "cpu", str(tmp_path))
    assert spread.label == "Nearest Neighbor (cpu)" and spread.std == pytest.approx(0.1) and spread.seeds == 3
