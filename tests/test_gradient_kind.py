"""The gradient-kind comparison reads short runs that differ only in their input-gradient, judges each
source by the rule of evidence, and tests the posterior-gap explanation against them either way."""

from __future__ import annotations

import pytest

from pagcore.book import gradient_kind
from pagcore.book.evidence import Noise
from pagcore.store.runs import RunStore

NOISE = Noise(spreads={"vanilla": {"clean": 0.01}}, seeds={"vanilla": 3}, measured_on="cifar10")


def stored(store: RunStore, name: str, clean: float, train: list[float], epochs: int = 5):
    run = store.create(name, {"dataset": "cifar10", "epochs": epochs})
    run.write_json("metrics.json", {"clean": clean, "linf": 0.01, "l2": 0.05, "test_images": 10_000})
    history = [{"epoch": i + 1, "train_accuracy": a, "cross_entropy": 2.3 - a} for i, a in enumerate(train)]
    run.write_json("history.json", history)
    return run


def found(store: RunStore, cm: tuple[float, float], sbg: tuple[float, float] | None) -> dict:
    runs = {
        gradient_kind.label("class_mean", "logit"): stored(store, "cm-logit", cm[0], [0.2, cm[0]]),
        gradient_kind.label("class_mean", "log_softmax"): stored(store, "cm-soft", cm[1], [0.11, cm[1]]),
    }
    if sbg is not None:
        runs[gradient_kind.label("score", "logit")] = stored(store, "sbg-logit", sbg[0], [0.2, sbg[0]])
        runs[gradient_kind.label("score", "log_softmax")] = stored(store, "sbg-soft", sbg[1], [0.2, sbg[1]])
    return gradient_kind.comparison(runs)


def gaps(class_mean: float, score: float) -> dict:
    def summary(q50: float) -> dict:
        return {"q10": q50 - 0.1, "q50": q50, "q90": q50 + 0.1, "median_cosine_cap": (1 - q50**2) ** 0.5}

    return {"gaps": {"class_mean": summary(class_mean), "score": summary(score)}}


def test_the_compared_runs_are_the_two_kinds_of_each_source_and_wait_for_a_denoiser():
    without = gradient_kind.compared_points(None, epochs=5)
    assert list(without) == ["Class Mean, logit", "Class Mean, log-softmax"]
    assert without["Class Mean, log-softmax"] == ("class_mean", {"gradient": "log_softmax", "epochs": 5})
    both = gradient_kind.compared_points({"denoiser": "d", "score_sigma": 0.2}, epochs=3)
    assert both["Score-based (SBG), logit"] == (
        "score",
        {"denoiser": "d", "score_sigma": 0.2, "gradient": "logit", "epochs": 3},
    )


def test_a_longer_run_never_stands_in_for_a_short_one(tmp_path):
    store = RunStore(tmp_path)
    long = stored(store, "cm-logit-e20", 0.4, [0.3] * 20, epochs=20)
    runs = gradient_kind.comparison({gradient_kind.label("class_mean", "logit"): long})
    assert runs[("class_mean", "logit")] is None
    assert "| Class Mean | logit | not run |" in gradient_kind.runs_table(runs)


@pytest.mark.parametrize(
    ("cm", "sbg", "agrees"),
    [
        ((0.30, 0.12), (0.30, 0.31), True),  # log-softmax fails only where the gap is large
        ((0.30, 0.29), (0.30, 0.31), False),  # no deficit where the gap is large
        ((0.30, 0.12), (0.30, 0.12), False),  # a deficit where the gap is small too
    ],
)
def test_the_explanation_is_tested_both_ways(tmp_path, cm, sbg, agrees):
    runs = found(RunStore(tmp_path), cm, sbg)
    orders = {s: gradient_kind.source_reading(s, runs, NOISE, 10)[0] for s in gradient_kind.SOURCES}
    reading = gradient_kind.explanation_reading(orders, gaps(0.68, 0.02))
    assert reading.startswith("The median posterior gaps are Class Mean 0.68 and Score-based (SBG) 0.02.")
    assert ("The runs agree" in reading) is agrees
    assert ("do not agree" in reading) is (not agrees)


def test_each_source_is_read_by_the_rule_of_evidence(tmp_path):
    runs = found(RunStore(tmp_path), (0.30, 0.12), None)
    order, sentence = gradient_kind.source_reading("class_mean", runs, NOISE, 10)
    assert order == -1
    assert "the logit kind reaches 30.0% clean (above 2 × chance); " in sentence
    assert "the log-softmax kind reaches 12.0% clean (not above 2 × chance): a difference" in sentence
    assert "falls behind by more than the seed spread allows" in sentence
    assert gradient_kind.source_reading("class_mean", runs, None, 10)[0] is None
    order, sentence = gradient_kind.source_reading("score", runs, NOISE, 10)
    assert order is None and "have not been made yet" in sentence
    untested = gradient_kind.explanation_reading({"class_mean": -1, "score": None}, gaps(0.68, 0.02))
    assert "not tested yet" in untested
    assert "not been measured" in gradient_kind.explanation_reading({"class_mean": -1, "score": 0}, None)


def test_the_tables_and_curves_show_the_stored_numbers(tmp_path):
    runs = found(RunStore(tmp_path), (0.30, 0.12), (0.30, 0.31))
    table = gradient_kind.runs_table(runs)
    assert "| Class Mean | log-softmax | 12.0% | 2.18 | 12.0% | 1.0% | 5.0% |" in table
    assert "| Score-based (SBG) | 0.68 | 0.58–0.78 | 0.73 |" not in gradient_kind.gap_table(gaps(0.68, 0.02))
    assert "| Class Mean | 0.68 | 0.58–0.78 | 0.73 |" in gradient_kind.gap_table(gaps(0.68, 0.02))
    assert "not been measured" in gradient_kind.gap_table(None)
    reading = gradient_kind.curves_reading(runs, 10)
    assert "Class Mean, log-softmax goes from 11.0% to 12.0%, under twice chance" in reading
    assert "Class Mean, logit goes from 20.0% to 30.0%;" in reading
    figure = gradient_kind.curves_figure(runs, 10)
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == [
        *(gradient_kind.label(s, g) for s in gradient_kind.SOURCES for g in ("logit", "log_softmax")),
        "chance",
    ]


def test_the_finding_says_what_each_source_shows_and_what_waits():
    assert "waits for its runs" in gradient_kind.finding_line({"class_mean": None, "score": None}, 5, "cpu")
    line = gradient_kind.finding_line({"class_mean": -1, "score": None}, 5, "cpu")
    assert line == (
        "After 5 epochs at the cpu scale, the model trained on the log-softmax input-gradient instead of the logit "
        "falls behind the logit's model on Class Mean targets in clean accuracy (gaps judged against the seed "
        "spread of the full-length runs); the Score-based (SBG) runs are not made yet."
    )
    both = gradient_kind.finding_line({"class_mean": -1, "score": 0}, 5, "cpu")
    assert (
        "falls behind the logit's model on Class Mean targets and cannot be told apart from the logit's model "
        "on Score-based (SBG) targets" in both
    )
    alike = gradient_kind.finding_line({"class_mean": -1, "score": -1}, 5, "cpu")
    assert "falls behind the logit's model on Class Mean and Score-based (SBG) targets in" in alike


def test_an_empty_comparison_draws_no_axes_but_says_why():
    figure = gradient_kind.curves_figure({key: None for key in gradient_kind.comparison({})}, 10)
    (ax,) = figure.axes
    assert not ax.axison and not ax.get_lines()
    assert [t.get_text() for t in ax.texts] == ["no run of this comparison yet"]


@pytest.mark.parametrize(
    ("cm", "sbg", "reading"),
    [
        ((0.30, 0.12), (0.45, 0.27), "fails to fit only where the gap is larger"),  # and behind on SBG too
        ((0.30, 0.12), (0.30, 0.31), "as well as the logit kind does"),
        ((0.30, 0.12), (0.30, 0.12), "does not follow the gap"),  # both fail
        ((0.30, 0.25), (0.30, 0.27), "does not follow the gap"),  # neither fails
    ],
)
def test_fitting_at_all_is_read_against_the_gap_separately(tmp_path, cm, sbg, reading):
    runs = found(RunStore(tmp_path), cm, sbg)
    orders = {s: gradient_kind.source_reading(s, runs, NOISE, 10)[0] for s in gradient_kind.SOURCES}
    said = gradient_kind.stall_reading(runs, orders, gaps(0.68, 0.02), 10)
    assert said.startswith("Separately, whether the log-softmax kind fits its labels at all")
    assert reading in said
    assert ("not with the whole difference" in said) is (orders["score"] == -1 and "fails to fit only" in said)
    assert gradient_kind.stall_reading(runs, orders, None, 10) == ""
    lone = found(RunStore(tmp_path / "cm"), cm, None)
    assert gradient_kind.stall_reading(lone, orders, gaps(0.68, 0.02), 10) == ""
