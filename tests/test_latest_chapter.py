"""The later version's chapter: PAG-boosted adversarial training judged on means over seeds."""

from __future__ import annotations

import json
import math

import pytest

from pagcore.base.validation import ConfigError
from pagcore.book import latest
from pagcore.book.evidence import Judgement, Measured, Noise, side
from pagcore.config import preset_for
from pagcore.orchestrate.book_runs import ARCHITECTURE_ROWS, SEEDS, book_runs
from pagcore.orchestrate.experiments import ROWS, RealDataExperiment
from pagcore.paper import reported
from pagcore.store.runs import RunStore


class Stored:
    """A complete run as the chapter reads it: metrics, and evaluations under its folder."""

    def __init__(self, path, clean, linf, l2, autoattack=None, threat="linf"):
        self.path = path
        self.metrics = {"clean": clean, "linf": linf, "l2": l2, "test_images": 10_000}
        (path / "evaluations").mkdir(parents=True)
        if autoattack is not None:
            settings = {"norm": threat, "budgets": "real", "subset": {"size": 500}}
            entry = {"name": "autoattack", "settings": settings, "results": {"robust": autoattack}}
            (path / "evaluations" / f"autoattack-{threat}.json").write_text(json.dumps(entry))


def arm(tmp_path, name, linf_values, clean=0.6, autoattack=None):
    return [
        Stored(tmp_path / f"{name}{i}", clean + 0.001 * i, v, 0.4, None if autoattack is None else autoattack[i])
        for i, v in enumerate(linf_values)
    ]


NN, SBG = "adversarial + PAG (nearest neighbour)", "adversarial + PAG (score-based)"


def by_threat(without, with_pag, score=()):
    """ℓ∞ runs of adversarial training, with nearest-neighbour targets and with score-based ones; no ℓ2 run."""
    return {
        "linf": {"adversarial": without, NN: with_pag, SBG: list(score)},
        "l2": {"adversarial": [], NN: [], SBG: []},
    }


def test_a_gain_counts_only_beyond_twice_the_error_of_the_difference_of_the_means(tmp_path):
    # 30 ± 1 against 34 ± 1 over three seeds on 10,000 images: a 4-point gain, error 1.0 points (0.8 from the
    # seeds, the rest the sampling error of each mean).
    boosted = by_threat(arm(tmp_path, "a", [0.29, 0.30, 0.31]), arm(tmp_path, "b", [0.33, 0.34, 0.35]))
    verdict = latest.boost_verdict(boosted, "cpu")
    nn, sbg = "nearest neighbour targets (λ = 0.4)", "score-based targets (λ = 1.5)"
    assert f"ℓ∞ with {nn}: PGD-20 ℓ∞ +4.0 ± 1.0 points (± one standard error; a gain beyond the noise)" in verdict
    assert verdict.endswith(
        f"The PAG term raises {latest.TRUSTED_WORDS} beyond the noise in ℓ∞ with {nn}: the runs support the claim in "
        f"ℓ∞ with {nn}. Not judged yet: ℓ∞ with {sbg}, 3 of 3 seeds without the PAG term and 0 of 3 with it; "
        f"ℓ2 with {nn}, 0 of 3 seeds without the PAG term and 0 of 3 with it; ℓ2 with {sbg}, 0 of 3 seeds "
        "without the PAG term and 0 of 3 with it."
    )
    # The same means with a 5-point spread per arm: within the noise.
    noisy = by_threat(arm(tmp_path, "c", [0.25, 0.30, 0.35]), arm(tmp_path, "d", [0.29, 0.34, 0.39]))
    assert "(± one standard error; within the noise)" in latest.boost_verdict(noisy, "cpu")
    # While other arms are still to run, the "no" is said to be theirs so far.
    assert (
        f"The PAG term changes {latest.TRUSTED_WORDS} only within the noise in ℓ∞ with {nn}: the runs judged so far "
        "do not support the claim. Not judged yet"
    ) in latest.boost_verdict(noisy, "cpu")
    # A loss beyond the noise with one source, none with the other; the ℓ2 arms are equal, all seeds stored.
    without, lower = arm(tmp_path, "e", [0.29, 0.30, 0.31]), arm(tmp_path, "f", [0.25, 0.26, 0.27])
    lowered = by_threat(without, lower, arm(tmp_path, "g", [0.29, 0.30, 0.31]))
    lowered["l2"] = lowered["linf"]
    verdict = latest.boost_verdict(lowered, "cpu")
    assert verdict.startswith("Adversarial training with and without the PAG term, CIFAR-10, cpu scale")
    assert f"ℓ∞ with {nn}: PGD-20 ℓ∞ -4.0 ± 1.0 points (± one standard error; a loss beyond the noise)" in verdict
    assert verdict.endswith(
        f"The PAG term lowers {latest.TRUSTED_WORDS} beyond the noise in ℓ∞ with {nn}; it changes it only within "
        f"the noise in ℓ∞ with {sbg}, ℓ2 with {nn} and ℓ2 with {sbg}: the runs do not support the claim."
    )
    # A gain with one source and a loss with the other: each is named, and the support is only where it holds.
    mixed = by_threat(without, lower, arm(tmp_path, "h", [0.33, 0.34, 0.35]))
    assert latest.boost_verdict(mixed, "cpu").endswith(
        f"The PAG term raises {latest.TRUSTED_WORDS} beyond the noise in ℓ∞ with {sbg}; it lowers it beyond "
        f"the noise in ℓ∞ with {nn}: the runs support the claim in ℓ∞ with {sbg}. Not judged yet: ℓ2 with {nn}, "
        f"0 of 3 seeds without the PAG term and 0 of 3 with it; ℓ2 with {sbg}, 0 of 3 seeds without the PAG term "
        "and 0 of 3 with it."
    )


def test_two_seeds_are_not_judged_and_autoattack_is_preferred_when_every_seed_has_it(tmp_path):
    short = by_threat(arm(tmp_path, "a", [0.29, 0.30]), arm(tmp_path, "b", [0.33, 0.34, 0.35]))
    assert latest.boost_verdict(short, "cpu").endswith(
        "no comparison has all its seeds stored yet (ℓ∞ with nearest neighbour targets (λ = 0.4), 2 of 3 seeds "
        "without the PAG term and 3 of 3 with it; ℓ∞ with score-based targets (λ = 1.5), 2 of 3 seeds without the "
        "PAG term and 0 of 3 with it; ℓ2 with nearest neighbour targets (λ = 0.4), 0 of 3 seeds without the PAG "
        "term and 0 of 3 with it; ℓ2 with score-based targets (λ = 1.5), 0 of 3 seeds without the PAG term and 0 "
        "of 3 with it), so the claim that PAG boosts adversarial training is not judged yet."
    )
    attacked = by_threat(
        arm(tmp_path, "c", [0.29, 0.30, 0.31], autoattack=[0.25, 0.26, 0.27]),
        arm(tmp_path, "d", [0.33, 0.34, 0.35], autoattack=[0.25, 0.26, 0.28]),
    )
    verdict = latest.boost_verdict(attacked, "cpu")
    assert "AutoAttack ℓ∞ +0.3" in verdict and "(± one standard error; within the noise)" in verdict
    # PGD-20 on the whole test set stands beside it, unused by the verdict.
    beside = "within the noise), PGD-20 ℓ∞ +4.0 ± 1.0 points (± one standard error; a gain beyond the noise), clean"
    assert beside in verdict
    # A verdict on the trusted number says what moves beyond the noise beside it.
    assert "Beside that number, in ℓ∞ with nearest neighbour targets (λ = 0.4), PGD-20 ℓ∞ rises beyond the noise." in (
        verdict
    )
    table = latest.boost_table(attacked)
    assert "| ℓ∞ | adversarial | 3 | 60.1 ± 0.1% | 30.0 ± 1.0% | 40.0 ± 0.0% | 26.0 ± 1.0% |" in table
    assert "| ℓ2 | adversarial + PAG (score-based) | 0 | not run | not run | not run | not run |" in table


def test_the_chapters_boost_points_are_the_book_runs(tmp_path):
    from pagcore.orchestrate.book_runs import SCORE_DENOISERS

    points = latest.boost_points((0, 1))
    assert len(points) == 2 * 3 * 2  # threat models, arms, seeds
    assert points["adversarial + PAG (nearest neighbour) ℓ2, seed 1"] == (
        "adversarial_nearest_neighbor_l2",
        {"seed": 1},
    )
    row, overrides = points["adversarial + PAG (score-based) ℓ∞, seed 0"]
    assert row == "adversarial_score_linf" and overrides["denoiser"] == SCORE_DENOISERS["cifar10"]
    experiment = RealDataExperiment("cifar10", {"scale": "cpu"}, RunStore(tmp_path))
    config = experiment.config("adversarial_nearest_neighbor_linf")
    assert config.objective.lam == 0.4 and config.objective.source == "nearest_neighbor"
    config = experiment.config(row, **overrides)
    assert config.objective.source == "score" and config.objective.lam == 1.5 and config.adversary.threat == "linf"
    made = {(b.row, tuple(sorted(b.overrides.items()))) for b in book_runs("cpu") if b.chapter == "boost"}
    # Every point is a book run, but for seed 0 of adversarial training: the table's RIGD teacher.
    expected = {(row, tuple(sorted(o.items()))) for row, o in latest.boost_points().values()}
    assert made == expected - {("adversarial_linf", (("seed", 0),)), ("adversarial_l2", (("seed", 0),))}
    # A chapter may show fewer arms; a source with no arm is refused before anything is read.
    assert list(latest.boost_points((0,), ["nearest_neighbor"])) == [
        f"{training} {norm}, seed 0" for norm in ("ℓ∞", "ℓ2") for training in ("adversarial", NN)
    ]
    for sources in (["class_mean"], []):
        with pytest.raises(ConfigError, match="boost_sources"):
            latest.boost_points((0,), sources)
    assert latest.boost_setting() == (
        "The PAG term uses nearest neighbour targets (`nearest_neighbor`, λ = 0.4) or score-based targets "
        "(`score`, λ = 1.5)."
    )


def test_the_vit_rows_are_book_runs_and_the_score_row_takes_the_authors_early_vit_lambda():
    points = latest.architecture_points()
    assert list(points) == list(ARCHITECTURE_ROWS) == ["vanilla", "nearest_neighbor", "score"]
    assert all(overrides["architecture"] == "vit" for _, overrides in points.values())
    # The authors' ViT λ of 3.0 with their factor of 2/3 for the first 50 epochs: every epoch of a cpu run.
    assert points["score"][1]["lam"] == pytest.approx(2.0)
    assert preset_for("cpu", "cifar10").epochs <= reported.SCORE_LAMBDA_VIT_EARLY_EPOCHS
    assert "lam" not in points["nearest_neighbor"][1]
    with pytest.raises(ConfigError, match="first 50 epochs"):  # the early factor would not hold after epoch 50
        latest.architecture_points("cpu", epochs=60)
    assert list(latest.architecture_points("cpu", rows=["vanilla"])) == ["vanilla"]
    with pytest.raises(ConfigError, match="vit_rows"):
        latest.architecture_points("cpu", rows=["class_mean"])
    seeded = latest.architecture_points(seeds=SEEDS)
    assert list(seeded)[:3] == ["vanilla", "vanilla, seed 1", "vanilla, seed 2"]
    assert "seed" not in seeded["vanilla"][1] and seeded["score, seed 2"][1] == {**points["score"][1], "seed": 2}
    runs = {key: f"run of {key}" for key in seeded}
    assert latest.first_seeds(runs, ["vanilla", "score"]) == {"vanilla": "run of vanilla", "score": "run of score"}
    assert latest.first_seeds({}, ["vanilla"]) == {"vanilla": None}
    vit_runs = [b for b in book_runs("cpu") if b.chapter == "architecture"]
    assert [(b.row, b.overrides) for b in vit_runs] == list(seeded.values())
    assert not any(b.chapter == "architecture" for b in book_runs("paper"))


def judged(verdict, row="nearest_neighbor"):
    return Judgement(row, verdict, (f"reason of {row}",))


def test_the_architecture_verdict_says_yes_only_for_a_vit_row_that_is_evidence():
    runs = {"vanilla": object(), "nearest_neighbor": object(), "score": None}
    nothing = latest.architecture_verdict(runs, {}, {}, "cpu")
    assert "Score-based (SBG)), 2 are stored" in nothing and nothing.endswith("so the claim is not tested.")
    resnet = {"nearest_neighbor": judged("evidence")}
    evidence = latest.architecture_verdict(runs, {"nearest_neighbor": judged("evidence")}, resnet, "cpu")
    assert evidence.endswith("the runs support the claim beyond ResNet-18.")
    assert "Nearest Neighbor: **evidence** (reason of nearest_neighbor; on the ResNet-18: evidence)" in evidence
    # Evidence in one threat model answers for that one alone.
    partial = {"nearest_neighbor": Judgement("nearest_neighbor", "partial evidence", ("why",), ("l2",))}
    assert latest.architecture_verdict(runs, partial, resnet, "cpu").endswith(
        "Nearest Neighbor is partial evidence, meeting the rule under ℓ2 alone: the runs support the claim beyond "
        "ResNet-18 in that threat model only; in the other, no ViT row judged so far beats both vanilla and chance "
        "beyond the noise."
    )
    # Two rows, each evidence in a different threat model, are not one row evidence in both.
    crossed = partial | {"score": Judgement("score", "partial evidence", ("why",), ("linf",))}
    assert latest.architecture_verdict(runs, crossed, resnet, "cpu").endswith(
        "Nearest Neighbor and Score-based (SBG) are partial evidence, each in one threat model and none in both: the "
        "runs support the claim beyond ResNet-18 in each threat model, but through different rows."
    )
    # The ResNet-18's verdict names the spread it was judged with: its own over three seeds, or the widest.
    small = {"clean": 0.01, "linf": 0.01, "l2": 0.01}
    resnet_noise = Noise(
        {"nearest_neighbor": small}, {"nearest_neighbor": 3}, "ResNet", frozenset({"nearest_neighbor"})
    )
    both = {"nearest_neighbor": judged("evidence"), "score": judged("within noise", "score")}
    named = latest.architecture_verdict(runs, both, both, "cpu", noise=None, resnet_noise=resnet_noise)
    assert "on the ResNet-18: evidence, judged with its own seed spread)" in named
    assert "on the ResNet-18: within noise, judged with the widest seed spread)" in named
    not_yet = "The claim is not answered yet"
    mixed = {"nearest_neighbor": judged("within noise"), "score": judged("unchecked", "score")}
    assert not_yet in latest.architecture_verdict(runs, mixed, resnet, "cpu")
    # A PAG row that has not run keeps the answer open, whatever the others say.
    alone = latest.architecture_verdict(runs, {"nearest_neighbor": judged("within noise")}, resnet, "cpu")
    assert not_yet in alone and "Score-based (SBG) not run yet" in alone
    against = {"nearest_neighbor": judged("near chance"), "score": judged("within noise", "score")}
    # Within the noise of a borrowed spread is not yet a no; within the ViT's own spread is.
    borrowed = latest.architecture_verdict(runs, against, {}, "cpu")
    assert borrowed.endswith(
        "Score-based (SBG) is within the noise of a spread borrowed from other rows; the ViT's "
        "own 3 seeds of each row will measure its spread."
    )
    small = {"clean": 0.01, "linf": 0.01, "l2": 0.01}
    own = Noise({"vanilla": small, "score": small}, {"vanilla": 3, "score": 3}, "ViT", frozenset({"vanilla", "score"}))
    assert latest.architecture_verdict(runs, against, {}, "cpu", noise=own).endswith("on the ViT at this scale.")
    assert "(a ViT of 4 blocks of width 48," in latest.architecture_verdict(runs, against, {}, "cpu", width=48)
    noise = Noise({"one_image": {"linf": 0.051, "l2": 0.048}}, {"one_image": 3}, "ResNet", frozenset({"one_image"}))
    spread = latest.architecture_verdict(runs, against, {}, "cpu", noise=latest.architecture_noise(noise, {}))
    assert (
        "Every row is judged with the widest seed spread measured (clean 0.0, ℓ∞ 5.1, ℓ2 4.8 points, on ResNet, "
        "borrowed for the ViT). The claim is not answered yet" in spread
    )


def test_the_vit_rows_are_judged_against_the_vits_vanilla_with_the_widest_resnet_spread(tmp_path):
    def stored(name, clean, linf, l2):
        run = Stored(tmp_path / name, clean, linf, l2)
        run.metrics["test_images"] = 10_000
        return run

    runs = {
        "vanilla": stored("v", 0.70, 0.0, 0.05),
        "nearest_neighbor": stored("n", 0.60, 0.20, 0.40),
        "score": stored("s", 0.15, 0.12, 0.14),
    }
    # On the ResNet, nearest neighbour has its own small spread and one image a wide one: a ViT row has
    # no seeds of its own, so it must take the widest, one image's.
    small = {"clean": 0.001, "linf": 0.001, "l2": 0.001}
    spreads = {"vanilla": small, "nearest_neighbor": small, "one_image": {"clean": 0.3}}
    noise = Noise(spreads, {row: 3 for row in spreads}, "CIFAR-10", frozenset(spreads))
    judged = latest.architecture_judgements(runs, latest.architecture_noise(noise, {}))
    assert judged["score"].verdict == "near chance"
    # 60 % clean is far above twice chance unless the 30-point spread is borrowed.
    assert judged["nearest_neighbor"].verdict == "near chance"
    assert latest.architecture_judgements(runs, latest.architecture_noise(None, {})) == {}


def test_a_vit_row_with_three_seeds_is_judged_with_its_own_spread_and_the_others_with_the_widest(tmp_path):
    def stored(name, clean, linf, l2):
        run = Stored(tmp_path / name, clean, linf, l2)
        run.metrics["test_images"] = 10_000
        return run

    # The ResNet's widest spread is 10 points: with it, score's 12 % under ℓ∞ is no more than chance, and its
    # 15-point ℓ2 gain over vanilla within the noise (2 × 10 ≈ 20 points).
    resnet = Noise({"one_image": {"clean": 0.01, "linf": 0.10, "l2": 0.10}}, {"one_image": 3}, "ResNet")
    seeded = {
        "vanilla": [stored(f"v{s}", 0.60, 0.001 * s, 0.25) for s in range(3)],
        "nearest_neighbor": [stored(f"n{s}", 0.50 + 0.002 * s, 0.12 + 0.002 * s, 0.30) for s in range(3)],
        "score": [stored("s0", 0.45, 0.12, 0.40), stored("s1", 0.46, 0.13, 0.41)],
    }
    vit = {row: runs[0] for row, runs in seeded.items()}
    noise = latest.architecture_noise(resnet, seeded)
    assert noise.own == {"vanilla", "nearest_neighbor"}
    assert noise.spread("nearest_neighbor", "linf") == pytest.approx(0.002)
    # Two seeds measure a spread but not the row's own: score takes the widest, the ResNet's included.
    assert noise.spread("score", "linf") == pytest.approx(0.10)
    judged = latest.architecture_judgements(vit, noise)
    # Nearest neighbour clears its own small spread under PGD-20 and waits only for AutoAttack.
    assert judged["nearest_neighbor"].verdict == "unchecked"
    assert judged["score"].verdict == "within noise"
    # The reason gives both numbers and the gap the noise allows, 2 × √(0.10² + sampling) ≈ 20 points, in
    # the threat model above chance alone.
    assert judged["score"].reasons == (
        "not told apart from vanilla under PGD-20 ℓ2 (40.0% against 25.0%; a gap must exceed 20.0 points)",
    )
    words = latest.architecture_verdict(vit, judged, {}, "cpu", noise=noise)
    assert "The ViT's Vanilla and the ViT's Nearest Neighbor are judged with their own seed spread" in words
    # Without the ResNet's spread the ViT's alone is used; without either, nothing is judged.
    assert latest.architecture_noise(None, seeded).own == noise.own
    assert latest.architecture_noise(None, {}) is None


@pytest.mark.parametrize("seeds", [2, 3])
def test_the_gain_needs_three_seeds_a_side(seeds):
    values = [Measured(0.3 + 0.01 * i, 500) for i in range(seeds)]
    assert (latest.gain(values, values) is None) is (seeds < 3)


def test_the_gain_carries_the_sampling_error_of_the_shared_subset_beside_the_seed_spread():
    without = [Measured(v, 500) for v in (0.30, 0.31, 0.32)]
    with_pag = [Measured(v, 500) for v in (0.27, 0.28, 0.29)]
    difference, error = latest.gain(without, with_pag)
    assert difference == pytest.approx(-0.03)
    # Seeds alone: √(2 × 0.01² / 3) = 0.0082; each mean on 500 images adds √(p(1 - p)/500) ≈ 0.020.
    seeds = math.sqrt(2 * 0.01**2 / 3)
    expected = math.sqrt(seeds**2 + 0.31 * 0.69 / 500 + 0.28 * 0.72 / 500)
    assert error == pytest.approx(expected)
    # A 3-point loss on 500 images is within the noise, though far beyond the seeds' spread alone.
    assert side(difference, error) == 0
    assert side(difference, seeds) == -1
    # On the whole test set the same loss is beyond the noise.
    whole = latest.gain([Measured(m.value, 10_000) for m in without], [Measured(m.value, 10_000) for m in with_pag])
    assert side(*whole) == -1


def test_the_command_line_names_the_same_runs_as_the_chapters_rows(tmp_path):
    import shlex

    from pagcore import cli
    from pagcore.orchestrate.experiments import run_name_for

    experiment = RealDataExperiment("cifar10", {"scale": "cpu"}, RunStore(tmp_path))
    parser = cli.build_parser()

    def named(flags):
        args = parser.parse_args(shlex.split(f"train --scale cpu --data x.npz {flags}"))
        return run_name_for(cli.from_arguments(args).resolve(), "real")

    for row, flags in (
        ("adversarial_nearest_neighbor_linf", "--threat linf --source nearest_neighbor --lam 0.4 --seed 1"),
        ("adversarial_l2", "--threat l2 --seed 2"),
    ):
        seed = int(flags.split()[-1])
        assert named(f"--objective adversarial {flags}") == run_name_for(experiment.config(row, seed=seed), "real")
    # The ViT's rows as a user types them, for a seed other than the first.
    points = latest.architecture_points("cpu", seeds=SEEDS)
    for key, flags in (
        ("vanilla, seed 1", "--objective cross_entropy --seed 1"),
        ("nearest_neighbor, seed 2", "--objective pag --source nearest_neighbor --seed 2"),
    ):
        row, overrides = points[key]
        assert named(f"--architecture vit {flags}") == run_name_for(experiment.config(row, **overrides), "real")


def test_better_alignment_more_robustness_is_read_from_the_rank_correlation():
    def score(objective, alignment, robust):
        return {
            "objective": objective,
            "alignment": alignment,
            "robust_l2": robust,
            "reference": "teacher",
            "configuration": f"{objective} {alignment}",
        }

    rising = {f"run {i}": score("pag", 0.1 * i, 0.05 * i) for i in range(1, 9)}
    rising["vanilla"] = score("cross_entropy", 0.0, 0.0)
    groups = latest.alignment_groups(rising)
    assert set(groups) == {"PAG (no adversarial examples)", "vanilla"} and len(groups["vanilla"]) == 1
    claim = latest.alignment_verdict(rising, "cpu")
    assert claim.startswith("Better alignment, more robustness (CIFAR-10, cpu scale): Across the 9 training")
    assert claim.endswith("the interval excludes 0: the better aligned runs are the more robust ones.")
    assert "no correlation yet" in latest.alignment_verdict({"one": score("pag", 0.1, 0.1)}, "cpu")
    # The points the second reading sets apart have legend entries of their own.
    rising["rigd"] = {**score("pag", 0.9, 0.5), "source": "rigd"}
    rising["boosted"] = {**score("adversarial", 0.8, 0.5), "lam": 0.4}
    rising["trained"] = score("adversarial", 0.7, 0.5)
    assert set(latest.alignment_groups(rising)) == {
        "PAG (no adversarial examples)",
        "vanilla",
        "RIGD (adversarially trained teacher's gradients)",
        "adversarial training + PAG",
        "adversarial training",
    }


def test_the_alignment_claim_names_its_reference_and_its_score_based_reading(tmp_path):
    store = RunStore(tmp_path)
    teacher = {"dataset": "cifar10", "scale": "cpu", "objective": "adversarial", "adversary": {"threat": "l2"}}
    store.create("teacher", teacher)
    scores = {"a": {"reference": "teacher"}, "b": {"reference": "teacher"}, "c": {"reference": "elsewhere"}}
    assert latest.reference_words(scores, str(tmp_path)) == "CIFAR-10 adversarial ℓ2 (cpu)"
    assert latest.reference_words({"a": {"reference": "elsewhere"}}, str(tmp_path)) == "`elsewhere`"
    assert latest.reference_words({}, str(tmp_path)) == "no run yet"
    assert latest.score_based_reading("cpu", str(tmp_path)) == (
        "No denoiser is trained, so the claim is not read against the score-based targets."
    )


def test_the_alignment_plot_shows_only_runs_scored_against_the_shared_reference():
    scores = {
        "a": {"objective": "pag", "alignment": 0.3, "robust_l2": 0.3, "reference": "teacher"},
        "b": {"objective": "pag", "alignment": 0.4, "robust_l2": 0.4, "reference": "teacher"},
        "teacher": {"objective": "adversarial", "alignment": 0.5, "robust_l2": 0.5, "reference": "other"},
    }
    assert latest.alignment_groups(scores) == {"PAG (no adversarial examples)": [(0.3, 0.3), (0.4, 0.4)]}


def test_the_command_of_every_book_run_makes_exactly_that_run(tmp_path):
    import shlex

    from pagcore import cli
    from pagcore.orchestrate.experiments import run_name_for, train_command

    parser = cli.build_parser()
    for entry in book_runs("cpu"):
        command = train_command(entry.dataset, entry.row, entry.overrides, "cpu", "x.npz")
        args = parser.parse_args(shlex.split(command)[3:])
        expected = RealDataExperiment(entry.dataset, {"scale": "cpu"}, RunStore(tmp_path)).config(
            entry.row, **entry.overrides
        )
        assert run_name_for(cli.from_arguments(args).resolve(), "real") == run_name_for(expected, "real"), command


def test_each_boost_run_is_evaluated_in_the_threat_model_it_was_trained_for():
    import shlex

    from pagcore import cli
    from pagcore.orchestrate.evaluations import SUBSETS
    from pagcore.orchestrate.experiments import run_name_for, train_command

    parser = cli.build_parser()
    points = list(latest.boost_points().values())
    commands = latest.boost_evaluate_commands(latest.boost_points(), "cpu", "x.npz")
    assert len(commands) == len(points) == 18
    for command, (row, overrides) in zip(commands, points):
        # The run each command evaluates is the one the chapter's train command makes.
        made = parser.parse_args(shlex.split(train_command("cifar10", row, overrides, "cpu", "x.npz"))[3:])
        config = cli.from_arguments(made).resolve()
        args = parser.parse_args(shlex.split(command)[3:])
        assert args.run == run_name_for(config, "real"), command
        assert args.threats == config.adversary.threat == ROWS[row].knobs["threat"] == row.rsplit("_", 1)[1]
        assert args.subset == SUBSETS["cifar10"][1] and args.checklist and args.pag_score
        assert "autoattack" in args.attacks.split(",")


def test_the_commands_carry_the_chapters_own_training_knobs(tmp_path):
    import shlex

    from pagcore import cli
    from pagcore.orchestrate.experiments import run_name_for, train_command

    parser = cli.build_parser()
    shared = {"epochs": 3, "width": 16, "pool_size": None}  # None: the scale's, left out of the commands
    points = list(latest.boost_points((0,)).values())
    evaluations = latest.boost_evaluate_commands(latest.boost_points((0,)), "cpu", "x.npz", shared)
    experiment = RealDataExperiment("cifar10", {"scale": "cpu", "epochs": 3, "width": 16}, RunStore(tmp_path))
    for (row, overrides), evaluation in zip(points, evaluations):
        command = train_command("cifar10", row, overrides, "cpu", "x.npz", shared)
        assert "--epochs 3" in command and "--width 16" in command and "--pool-size" not in command
        name = run_name_for(cli.from_arguments(parser.parse_args(shlex.split(command)[3:])).resolve(), "real")
        # The very run the chapter looks up with the same knobs, and the one its evaluate command names.
        assert name == run_name_for(experiment.config(row, **overrides), "real")
        assert parser.parse_args(shlex.split(evaluation)[3:]).run == name
    assert name != run_name_for(RealDataExperiment("cifar10", {"scale": "cpu"}).config(row, **overrides), "real")


def test_every_seed_behind_the_boost_means_has_its_own_line(tmp_path):
    runs = []
    for seed, autoattack in ((0, 0.25), (1, None)):
        run = Stored(tmp_path / f"s{seed}", 0.62 + 0.01 * seed, 0.31, 0.46, autoattack=autoattack)
        run.params = {"seed": seed}
        runs.append(run)
    table = latest.boost_runs_table({"linf": {"adversarial": runs, NN: []}})
    lines = table.splitlines()[2:]
    assert lines == [
        "| ℓ∞ | adversarial | 0 | 62.0% | 31.0% | 46.0% | 25.0% |",
        "| ℓ∞ | adversarial | 1 | 63.0% | 31.0% | 46.0% | not run |",
    ]
    assert "no run stored yet" in latest.boost_runs_table({"linf": {"adversarial": []}})
