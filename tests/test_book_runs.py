"""The one list of the runs the book shows: every entry resolves to a configuration, names one
run only, and comes after whatever it depends on."""

import pytest

from pagcore.orchestrate.book_runs import NOISE_ROWS, SEEDS, book_runs
from pagcore.orchestrate.experiments import ROWS, RealDataExperiment
from pagcore.store.runs import RunStore
from pagcore.train.trainer import run_name_for


@pytest.mark.parametrize("scale", ["paper", "cpu"])
def test_every_book_run_resolves_to_a_distinct_run(scale, tmp_path):
    names = []
    for entry in book_runs(scale):
        experiment = RealDataExperiment(entry.dataset, {"scale": scale}, RunStore(tmp_path))
        names.append(run_name_for(experiment.config(entry.row, **entry.overrides), "real"))
    assert len(names) == len(set(names)), "two entries would train the same run"


@pytest.mark.parametrize("scale", ["paper", "cpu"])
def test_each_teacher_comes_before_its_students(scale):
    order = [(e.dataset, e.row) for e in book_runs(scale) if not e.overrides]
    for dataset, row in order:
        teacher = ROWS[row].teacher
        if teacher:
            assert order.index((dataset, teacher)) < order.index((dataset, row))


def test_the_k_study_is_a_cpu_scale_chapter():
    assert not [e for e in book_runs("paper") if e.chapter == "k_study"]
    ks = [e.overrides["classes_per_image"] for e in book_runs("cpu") if e.chapter == "k_study"]
    assert ks and 10 in ks and 2 not in ks  # the full sum; the preset's own k is the table's run


@pytest.mark.parametrize("scale", ["paper", "cpu"])
def test_every_row_of_the_rule_of_evidence_is_trained_with_every_seed(scale):
    seeds_of = {}
    for entry in book_runs(scale):
        if entry.dataset == "cifar10" and set(entry.overrides) <= {"seed"}:
            seeds_of.setdefault(entry.row, set()).add(entry.overrides.get("seed", 0))
    for row in NOISE_ROWS:
        assert seeds_of[row] == set(SEEDS), row


@pytest.mark.parametrize("scale", ["paper", "cpu"])
def test_the_score_based_entries_use_the_books_committed_denoiser_and_both_gradient_kinds_at_the_cpu_scale(scale):
    from pagcore.orchestrate.book_runs import SCORE_DENOISERS
    from pagcore.orchestrate.experiments import ROWS
    from pagcore.train.trainer import check_trainable

    entries = [e for e in book_runs(scale) if ROWS[e.row].knobs.get("source") == "score"]
    assert {e.dataset for e in entries} == set(SCORE_DENOISERS)
    boosted = {e.row for e in entries if e.chapter == "boost"}
    assert boosted == ({"adversarial_score_linf", "adversarial_score_l2"} if scale == "cpu" else set())
    for entry in entries:
        config = RealDataExperiment(entry.dataset, {"scale": scale}).config(entry.row, **entry.overrides)
        assert config.objective.denoiser == SCORE_DENOISERS[entry.dataset]
        check_trainable(config, "real", RunStore())  # the committed denoiser is complete, of this dataset, at this σ
    kinds = {e.overrides["gradient"] for e in entries if e.chapter == "gradient_kind"}
    assert kinds == ({"logit", "log_softmax"} if scale == "cpu" else set())


def test_a_score_based_row_names_its_denoiser_and_states_a_lambda_only_where_none_is_published(monkeypatch):
    from pagcore.base.validation import ConfigError
    from pagcore.orchestrate import book_runs

    assert "lam" not in book_runs.score_overrides("cifar10")  # the authors' λ comes from the paper's record
    assert book_runs.score_overrides("stl10")["lam"] == book_runs.SCORE_LAMBDA_CHOSEN["stl10"]
    assert book_runs.row_overrides("stl10", "score") == book_runs.score_overrides("stl10")
    assert book_runs.row_overrides("stl10", "class_mean") == {}
    assert book_runs.results_rows("stl10")[-1] == "score"
    monkeypatch.delitem(book_runs.SCORE_DENOISERS, "stl10")
    assert "score" not in book_runs.results_rows("stl10")  # no denoiser, no row
    with pytest.raises(ConfigError, match="no denoiser"):
        book_runs.score_overrides("stl10")
