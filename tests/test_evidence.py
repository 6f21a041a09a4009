"""The book's rule for evidence (pagcore.book.evidence) and the findings computed with it."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from pagcore.book import evidence, findings, verdicts
from pagcore.book.evidence import Measured, Noise
from pagcore.book.findings import DatasetFinding, finding_sentence

NOISE = Noise(
    spreads={"one_image": {"clean": 0.02, "linf": 0.025, "l2": 0.025}},
    seeds={"one_image": 3},
    measured_on="test",
    own=frozenset({"one_image"}),
)
FULL = 10_000


def numbers(linf: float, l2: float, images: int = FULL, autoattack: bool = True) -> dict[tuple[str, str], Measured]:
    """PGD-20 on the whole test set and, unless told otherwise, AutoAttack at the same accuracy."""
    attacks = ("pgd20", "autoattack") if autoattack else ("pgd20",)
    return {(a, "linf"): Measured(linf, images) for a in attacks} | {(a, "l2"): Measured(l2, images) for a in attacks}


VANILLA = numbers(0.0, 0.0)


def test_a_constant_classifier_is_exactly_as_accurate_under_attack_as_clean():
    row = evidence.chance_metrics(10)
    assert row == {"clean": 0.1, "linf": 0.1, "l2": 0.1}
    assert evidence.robust_among_correct(row["linf"], row["clean"]) == 1.0


@pytest.mark.parametrize(("clean", "fits"), [(0.19, False), (0.205, False), (0.3, True), (0.63, True)])
def test_a_model_must_pass_twice_chance_by_more_than_its_noise_before_its_robustness_counts(clean, fits):
    assert evidence.fits_labels(clean, 10, margin=0.04) is fits
    verdict = evidence.judge("r", clean, numbers(0.5, 0.5), VANILLA, noise=NOISE, num_classes=10, failed_checks=[])
    assert (verdict.verdict == "near chance") is not fits


def test_the_tolerance_is_twice_the_standard_error_of_the_difference():
    a, b = Measured(0.3, 100, "one_image"), Measured(0.1, 400, "vanilla")
    # one image carries its own 0.025; vanilla has no seeds, so it takes the widest, also 0.025.
    expected = 2 * math.sqrt(0.025**2 + 0.025**2 + 0.3 * 0.7 / 100 + 0.1 * 0.9 / 400)
    assert NOISE.tolerance("linf", a, b) == pytest.approx(expected)


def seeds_of(*linf: float) -> list[dict[str, float]]:
    return [{"clean": 0.5, "linf": value, "l2": value} for value in linf]


def test_a_row_has_a_spread_of_its_own_only_with_three_seeds():
    noise = evidence.seed_noise(
        {
            "one_image": seeds_of(0.10, 0.20, 0.15),
            "vanilla": seeds_of(0.0, 0.0, 0.0),
            "nearest_neighbor": seeds_of(0.12, 0.12),  # two seeds agreeing by luck prove little
            "class_mean": seeds_of(0.3),
        },
        "test",
    )
    assert noise.own == {"one_image", "vanilla"} and set(noise.spreads) == {"one_image", "vanilla", "nearest_neighbor"}
    assert noise.spread("vanilla", "linf") == 0.0
    assert noise.spread("one_image", "linf") == pytest.approx(0.05)
    assert noise.spread("nearest_neighbor", "linf") == pytest.approx(0.05)  # the widest, not its own 0
    assert noise.spread("class_mean", "linf") == pytest.approx(0.05)
    # Against a vanilla model whose seeds all sit at 0, a gap needs only twice one row's spread.
    row, baseline = Measured(0.11, FULL, "nearest_neighbor"), Measured(0.0, FULL, "vanilla")
    assert noise.differ("linf", row, baseline) == 1
    assert noise.differ("linf", row, Measured(0.0, FULL, "class_mean")) == 0
    # On another dataset no row has seeds of its own.
    borrowed = noise.borrowed("STL-10")
    assert borrowed.own == frozenset() and borrowed.measured_on == "test, borrowed for STL-10"
    assert borrowed.differ("linf", row, baseline) == 0
    assert evidence.seed_noise({"one_image": seeds_of(0.1)}, "test") is None


def test_the_judge_gives_vanilla_its_own_spread_and_the_row_its_own():
    noise = evidence.seed_noise({"vanilla": seeds_of(0.0, 0.0, 0.0), "one_image": seeds_of(0.1, 0.2, 0.3)}, "test")
    robust, baseline = numbers(0.18, 0.18), numbers(0.0, 0.0)
    # The row has no seeds: it takes one image's 0.1, and 0.18 is within twice that of the constant
    # classifier's 0.1 (and of vanilla's 0).
    assert evidence.judge("nearest_neighbor", 0.6, robust, baseline, noise=noise, num_classes=10).verdict == (
        "near chance"
    )
    # With a third row whose spread is wide, the widest is 0.1: vanilla is judged with its own 0, or the
    # 0.18 against 0 would be within the noise.
    tight = evidence.seed_noise(
        {
            "vanilla": seeds_of(0.0, 0.0, 0.0),
            "nearest_neighbor": seeds_of(0.17, 0.18, 0.19),
            "one_image": seeds_of(0.1, 0.2, 0.3),
        },
        "test",
    )
    assert tight.widest("linf") == pytest.approx(0.1)
    judged = evidence.judge("nearest_neighbor", 0.6, robust, baseline, noise=tight, num_classes=10, failed_checks=[])
    assert judged.verdict == "evidence" and judged.norms == ("linf", "l2")
    # Its size, without parentheses: a finding reads the reason inside its own.
    assert judged.reasons[0].endswith(
        ", with AutoAttack ℓ∞ 18.0% against vanilla's 0.0%, ℓ2 18.0% against vanilla's 0.0%"
    )


def test_a_robust_accuracy_no_higher_than_chance_is_no_robustness_in_its_threat_model():
    noise = evidence.seed_noise(
        {"vanilla": seeds_of(0.0, 0.0, 0.0), "nearest_neighbor": seeds_of(0.07, 0.075, 0.08)}, "test"
    )

    def judge(robust):
        return evidence.judge("nearest_neighbor", 0.6, robust, VANILLA, noise=noise, num_classes=10, failed_checks=[])

    # Far above vanilla's 0 in both threat models, but under l-inf below the constant classifier's 10%.
    partial = judge(numbers(0.075, 0.36))
    assert partial.verdict == "partial evidence" and partial.norms == ("l2",)
    assert partial.supports and not partial.is_evidence
    (reason,) = partial.reasons
    assert "beyond the noise under ℓ2 alone, with AutoAttack ℓ2 36.0% against vanilla's 0.0%, while" in reason
    assert "AutoAttack ℓ∞ leaves 7.5%, no more than the 10.0% a constant classifier keeps" in reason
    # The strongest attack of a threat model decides: PGD-20 above chance, AutoAttack at it.
    robust = numbers(0.3, 0.36) | {("autoattack", "linf"): Measured(0.1, FULL)}
    assert judge(robust).verdict == "partial evidence"
    # Just above 10%, but not by more than the noise (twice the row's spread and sampling error).
    above_by_little = judge(numbers(0.105, 0.36))
    assert above_by_little.verdict == "partial evidence"
    assert (
        "leaves 10.5%, above the 10.0% a constant classifier keeps by less than the 1.2 points its noise allows"
        in (above_by_little.reasons[0])
    )
    assert judge(numbers(0.2, 0.36)).verdict == "evidence"
    # At chance in every threat model, however far above vanilla: no evidence at all.
    low = judge(numbers(0.075, 0.09))
    assert low.verdict == "near chance" and not low.supports
    assert low.reasons == (
        "AutoAttack ℓ∞ leaves 7.5%, no more than the 10.0% a constant classifier keeps; "
        "AutoAttack ℓ2 leaves 9.0%, no more than the 10.0% a constant classifier keeps",
    )


def test_robustness_at_chance_is_final_before_stronger_attacks_or_the_checklist():
    # PGD-20 alone already leaves chance in both threat models; AutoAttack can only lower it, so the row
    # is not left waiting as "unchecked" or "masking suspected".
    at_chance = numbers(0.05, 0.08, autoattack=False)
    for failed in (None, ["black_box"]):
        judged = evidence.judge("r", 0.6, at_chance, VANILLA, noise=NOISE, num_classes=10, failed_checks=failed)
        assert judged.verdict == "near chance"
        assert judged.reasons[0].startswith("PGD-20 ℓ∞ leaves 5.0%, no more than the 10.0%")


def test_a_threat_model_at_chance_asks_no_autoattack_and_one_without_any_attack_is_unchecked():
    # ℓ2 at chance under PGD-20: AutoAttack ℓ2 can only lower it, so only ℓ∞'s is asked for.
    partial = numbers(0.3, 0.04, autoattack=False) | {("autoattack", "linf"): Measured(0.3, FULL)}
    judged = evidence.judge("r", 0.6, partial, VANILLA, noise=NOISE, num_classes=10, failed_checks=[])
    assert judged.verdict == "partial evidence" and judged.norms == ("linf",)
    # No attack at all in one threat model: neither at chance nor evidence there, but not run yet.
    only_linf = {key: m for key, m in numbers(0.3, 0.04).items() if key[1] == "linf"}
    for linf in (0.3, 0.05):
        robust = {key: replace(m, value=linf) for key, m in only_linf.items()}
        judged = evidence.judge("r", 0.6, robust, VANILLA, noise=NOISE, num_classes=10, failed_checks=[])
        assert judged.verdict == "unchecked" and judged.reasons == ("AutoAttack ℓ2 not run yet",)


def test_a_verdict_outside_the_rule_is_refused():
    with pytest.raises(ValueError, match="unknown verdict 'within the noise'"):
        evidence.Judgement("r", "within the noise", ())


def test_gaps_within_the_noise_are_not_ranked():
    assert NOISE.differ("linf", Measured(0.14, FULL), Measured(0.11, FULL)) == 0
    assert NOISE.differ("linf", Measured(0.20, FULL), Measured(0.11, FULL)) == 1
    assert NOISE.differ("linf", Measured(0.02, FULL), Measured(0.11, FULL)) == -1
    values = {"a": Measured(0.20, FULL), "b": Measured(0.17, FULL), "c": Measured(0.02, FULL)}
    assert evidence.separated(values, "linf", NOISE) == {"a": ["c"], "b": ["c"], "c": []}
    assert evidence.separation_words(evidence.separated(values, "linf", NOISE), {"a": "A"}) == (
        "A is above c, b above c; no other pair is told apart by the noise"
    )
    # Not a chain: a and c differ while b is within the noise of both, and only that pair is ranked.
    chained = {"a": Measured(0.20, FULL), "b": Measured(0.16, FULL), "c": Measured(0.12, FULL)}
    assert evidence.separated(chained, "linf", NOISE) == {"a": ["c"], "b": [], "c": []}
    close = {"a": Measured(0.12, FULL), "b": Measured(0.11, FULL)}
    assert evidence.separation_words(evidence.separated(close, "linf", NOISE), {}) == (
        "no two rows are told apart by the noise"
    )


def test_the_papers_rows_are_ranked_by_the_papers_own_seed_spread():
    noise = evidence.paper_noise()
    # Table 1's one image and class mean under l-inf PGD-20: 0.9 points apart, within its Table 4 spread.
    assert noise.differ("linf", Measured(0.166, FULL), Measured(0.157, FULL)) == 0
    assert noise.differ("linf", Measured(0.166, FULL), Measured(0.12, FULL)) == 1


def test_verdicts_name_the_first_reason_a_row_is_not_evidence():
    def judge(robust, failed=()):
        return evidence.judge("r", 0.6, robust, VANILLA, noise=NOISE, num_classes=10, failed_checks=failed).verdict

    assert judge(numbers(0.3, 0.4), []) == "evidence"
    # At chance under ℓ2, which then counts neither way: evidence under ℓ∞ alone.
    assert judge(numbers(0.3, 0.04), []) == "partial evidence"
    tied = evidence.judge(
        "r", 0.6, numbers(0.3, 0.24), numbers(0.0, 0.2), noise=NOISE, num_classes=10, failed_checks=[]
    )
    assert tied.verdict == "within noise" and "ℓ2" in tied.reasons[0] and "ℓ∞" not in tied.reasons[0]
    assert judge(numbers(0.3, 0.4), ["black_box"]) == "masking suspected"
    assert judge(numbers(0.3, 0.4), None) == "unchecked"
    assert judge(numbers(0.3, 0.4, autoattack=False), []) == "unchecked"
    weaker = evidence.judge("r", 0.6, numbers(0.3, 0.3), numbers(0.5, 0.5), noise=NOISE, num_classes=10)
    assert weaker.verdict == "not more robust"


def test_a_stronger_attack_on_a_small_subset_can_take_the_evidence_away():
    robust = {**numbers(0.3, 0.4), ("autoattack", "linf"): Measured(0.05, 100)}
    baseline = {**VANILLA, ("autoattack", "linf"): Measured(0.0, 100)}
    assert evidence.judge(
        "r", 0.6, numbers(0.3, 0.4), VANILLA, noise=NOISE, num_classes=10, failed_checks=[]
    ).is_evidence
    verdict = evidence.judge("r", 0.6, robust, baseline, noise=NOISE, num_classes=10, failed_checks=[])
    assert verdict.verdict == "partial evidence" and not verdict.is_evidence
    assert "AutoAttack ℓ∞ leaves 5.0%" in verdict.reasons[0]


def checklist(failed=(), targeted: bool = True, current: bool = True) -> dict:
    """A stored checklist as the rule reads it: its settings (with the checks' references when judged
    by the current ones), its failures and its more-iterations numbers."""
    from pagcore.evaluate.checklist import ChecklistConfig

    settings = {"references": ChecklistConfig().settings()["references"]} if current else {}
    numbers = {"baseline": 0.3, "white_box": 0.28, **({"targeted_attack": {}} if targeted else {})}
    checks = [{"name": "more_iterations", "numbers": numbers}]
    return {"settings": settings, "results": {"failed": list(failed), "checks": checks}}


def test_failed_checks_need_the_checklist_in_both_threat_models():
    passed, failed = checklist(), checklist(["black_box"])
    assert evidence.failed_checks({("checks", "linf"): passed}) is None
    assert evidence.failed_checks({("checks", "linf"): passed, ("checks", "l2"): passed}) == []
    assert evidence.failed_checks({("checks", "linf"): failed, ("checks", "l2"): passed}) == ["black_box"]


def test_a_checklist_judged_against_older_references_keeps_its_passes_but_not_its_changed_failures():
    def failed(linf, l2=None):
        return evidence.failed_checks({("checks", "linf"): linf, ("checks", "l2"): l2 or checklist()})

    # PGD alone as the strongest white-box attack: the targeted step could only lower the accuracy the
    # black-box and transfer checks compare with, so their passes stand and their failures are not read.
    pgd_only = checklist(targeted=False, current=False)
    assert not evidence.has_targeted_step(pgd_only) and failed(pgd_only) == []
    for check in ("black_box", "transfer"):
        assert failed(checklist([check], targeted=False, current=False)) is None
    # Check 3 judged against targeted APGD: its failure may vanish against PGD-100×5 alone.
    assert failed(checklist(["more_iterations"], current=False)) is None
    assert failed(checklist(["more_iterations"])) == ["more_iterations"]
    # What the older references do not touch stands, and so does a failure in the other threat model.
    assert failed(checklist(["black_box", "gradients"], targeted=False, current=False)) == ["gradients"]
    assert failed(checklist(["black_box"], targeted=False, current=False), checklist(["eps_monotone"])) == [
        "eps_monotone"
    ]
    judged = evidence.judge("r", 0.6, numbers(0.3, 0.4), VANILLA, noise=NOISE, num_classes=10, failed_checks=None)
    assert judged.reasons == ("the masking checklist with its current attacks not run yet",)


def test_the_answer_depends_on_which_rows_are_evidence():
    def finding(**verdicts):
        judged = {row: evidence.Judgement(row, v, ("why",)) for row, v in verdicts.items()}
        return DatasetFinding("cifar10", "cpu", judged)

    assert finding(nearest_neighbor="evidence", rigd_linf="evidence").answer == "supports"
    assert finding(nearest_neighbor="within noise", rigd_linf="evidence").answer == "teacher only"
    # The score-based row distils a denoiser, never a robust model: it answers the question too.
    assert finding(nearest_neighbor="within noise", score="evidence", rigd_linf="evidence").answer == "supports"
    assert finding(nearest_neighbor="within noise", score="masking suspected").answer == "does not support"
    assert finding(nearest_neighbor="near chance").answer == "does not support"
    # Rows the noise cannot tell from vanilla neither support nor contradict; one below vanilla does.
    assert finding(nearest_neighbor="within noise", one_image="near chance").answer == "within noise"
    assert finding(nearest_neighbor="within noise", class_mean="masking suspected").answer == "does not support"
    assert finding(nearest_neighbor="within noise", class_mean="not more robust").answer == "does not support"
    assert "neither supports nor contradicts" in finding_sentence(finding(nearest_neighbor="within noise"))
    assert finding().answer == "no runs"
    sentence = finding_sentence(finding(nearest_neighbor="evidence", one_image="near chance"))
    assert sentence.startswith("CIFAR-10, cpu scale:")
    assert "near chance: One Image (why)" in sentence
    assert sentence.endswith("The evidence supports the direction of the paper's claim.")
    # Support that rests on rows with caveats says which rows carry it without one.
    both = finding(nearest_neighbor="evidence", class_mean="evidence")
    caveated = DatasetFinding("cifar10", "cpu", both.judgements, {"class_mean": "a caveat"})
    assert finding_sentence(caveated).endswith("claim, without caveat only through Nearest Neighbor.")
    alone = DatasetFinding("cifar10", "cpu", both.judgements, {"class_mean": "a", "nearest_neighbor": "b"})
    assert finding_sentence(alone).endswith("but only with the caveats stated on each supporting row.")


def test_rows_that_are_evidence_in_one_threat_model_support_the_claim_in_that_one_alone():
    def partial(row, *norms):
        return evidence.Judgement(row, "partial evidence", ("why",), norms)

    judged = {"nearest_neighbor": partial("nearest_neighbor", "l2"), "class_mean": partial("class_mean", "l2")}
    finding = DatasetFinding("cifar10", "cpu", judged, {"class_mean": "a caveat"})
    assert finding.answer == "supports in part" and finding.supported_norms == ["l2"]
    sentence = finding_sentence(finding)
    assert "partial evidence: Nearest Neighbor and Class Mean (why) (Class Mean: a caveat)" in sentence
    assert sentence.endswith(
        "The evidence supports the direction of the paper's claim under ℓ2 alone, without caveat only through "
        "Nearest Neighbor: in the other threat model no teacher-free row beats both vanilla and chance beyond the "
        "noise."
    )
    # While a teacher-free row awaits its stronger attacks, "no row" speaks of the rows judged so far.
    waiting = judged | {"score": evidence.Judgement("score", "unchecked", ("AutoAttack ℓ∞ not run yet",))}
    assert "in the other threat model no teacher-free row judged so far beats both" in finding_sentence(
        DatasetFinding("cifar10", "cpu", waiting)
    )
    # One row that is evidence in both threat models answers fully; a teacher's row never answers.
    full = judged | {"score": evidence.Judgement("score", "evidence", ("why",), ("linf", "l2"))}
    assert DatasetFinding("cifar10", "cpu", full).answer == "supports"
    teacher = {
        "rigd_linf": partial("rigd_linf", "l2"),
        "nearest_neighbor": evidence.Judgement("nearest_neighbor", "within noise", ("why",)),
    }
    assert DatasetFinding("cifar10", "cpu", teacher).answer == "teacher only"
    # The box's first line names the threat model.
    answer = findings._dataset_answer(finding)
    assert answer.startswith("Nearest Neighbor and Class Mean, trained without adversarial examples, are more robust")
    assert "beyond the measured noise under ℓ2 alone" in answer


def test_the_toy_finding_judges_the_gap_against_the_seed_spread():
    from pagcore.book.findings import toy_finding

    def record(pag, vanilla, kind="real"):
        seeds = {str(i): {"pag": {"pgd": p}, "vanilla": {"pgd": v}} for i, (p, v) in enumerate(zip(pag, vanilla))}
        return {"per_seed": seeds, "paper": {"pag": {"pgd": 0.755}, "vanilla": {"pgd": 0.0}}, "kind": kind}

    assert "PAG is more robust than vanilla beyond the noise" in toy_finding(record([0.9, 0.8], [0.1, 0.2]))
    assert "less robust than vanilla" in toy_finding(record([0.1, 0.2], [0.9, 0.8]))
    # 0.3 ± 0.28 against 0.25 ± 0.07 over two seeds: the gap is far inside twice its error.
    assert "not distinguishable" in toy_finding(record([0.5, 0.1], [0.2, 0.3]))
    assert "the paper's data and network, λ and pool size chosen here" in toy_finding(record([0.9, 0.8], [0.1, 0.2]))
    one = toy_finding(record([0.9], [0.1], kind="smoke"))
    assert one.startswith("Toy problem (1 seed)") and "no spread" in one
    assert "has not been made" in toy_finding(None)


def test_the_findings_box_answers_from_the_judged_rows_and_names_them(monkeypatch, tmp_path):

    def entry(robust, size=500):
        return {"results": {"robust": robust, "failed": []}, "settings": {"subset": {"size": size}}}

    class Run:
        def __init__(self, clean, linf, l2, checked=True):
            self.metrics = {"clean": clean, "linf": linf, "l2": l2, "test_images": FULL}
            self.entries = {("autoattack", "linf"): entry(linf), ("autoattack", "l2"): entry(l2)}
            if checked:
                self.entries.update({("checks", "linf"): checklist(), ("checks", "l2"): checklist()})

    stored = {
        "cifar10": {
            "vanilla": Run(0.8, 0.0, 0.0),
            "nearest_neighbor": Run(0.6, 0.3, 0.4),
            "one_image": Run(0.15, 0.1, 0.1),
        },
        "stl10": {},
    }
    # The later chapters' lines read the real store, whose runs see no evaluations here: none is asserted.
    monkeypatch.setattr(verdicts, "chosen_evaluations", lambda run: getattr(run, "entries", {}))
    monkeypatch.setattr(findings, "stored_table", lambda dataset, scale, *args: stored[dataset])
    monkeypatch.setattr(findings, "_seed_noise", lambda *args: NOISE)
    monkeypatch.setattr(findings, "paper_scale_runs", lambda *args: 0)
    box = findings.findings_box(tmp_path / "no-toy.json")
    assert "**Yes, in direction, at a reduced scale.**" in box and "(CIFAR-10: Nearest Neighbor)" not in box
    assert "make a classifier robust?* **Yes" in box  # the box states the question it answers
    assert "CIFAR-10: Nearest Neighbor, trained without adversarial examples, is more robust than vanilla" in box
    assert "STL-10:" not in box.splitlines()[3]  # one dataset judged: no claim about the other
    assert "near chance: One Image" in box and "STL-10, cpu scale: no row has been judged" in box
    # A class-mean row under the distance classifier's accuracy carries its caveat wherever it is evidence.
    stored["cifar10"]["class_mean"] = Run(0.4, 0.3, 0.4)
    monkeypatch.setattr(findings, "class_mean_distance_ceiling", lambda dataset: 0.42)
    box = findings.findings_box(tmp_path / "no-toy.json")
    caveat = "(Class Mean: its clean accuracy does not exceed the 42.0% of a classifier that sees only the distances"
    assert box.count(caveat) == 1  # on the dataset's line; the first line points to it
    assert "(Class Mean with a caveat, given on the CIFAR-10 line below)" in box.splitlines()[3]
    # ... and, when its gradients are no better aligned than vanilla's with the same reference, says so.
    for row, alignment in (("class_mean", 0.09), ("vanilla", 0.07)):
        stored["cifar10"][row].entries[("pag_score", "all")] = {
            "settings": {"reference": "teacher"},
            "results": {"gradient_alignment": {"score": alignment}},
        }
    box = findings.findings_box(tmp_path / "no-toy.json")
    assert box.count("not shown to align better with the adversarially trained reference than vanilla's, 0.09") == 1
    del stored["cifar10"]["vanilla"].entries[("pag_score", "all")]
    monkeypatch.setattr(findings, "class_mean_distance_ceiling", lambda dataset: 0.35)
    assert "Class Mean: its clean accuracy" not in findings.findings_box(tmp_path / "no-toy.json")
    del stored["cifar10"]["class_mean"]
    stored["cifar10"]["nearest_neighbor"] = Run(0.6, 0.3, 0.4, checked=False)
    assert "**Not yet checked.**" in findings.findings_box(tmp_path / "no-toy.json")
    stored["cifar10"]["nearest_neighbor"] = Run(0.6, 0.01, 0.05)  # at chance in both threat models
    box = findings.findings_box(tmp_path / "no-toy.json")
    assert (
        "**Not shown at the reduced scale.** CIFAR-10: no teacher-free PAG row (one whose targets need no robust "
        "model) meets the rule of evidence" in box
    )
    monkeypatch.setattr(findings, "_seed_noise", lambda *args: None)
    assert "**Not yet judged.**" in findings.findings_box(tmp_path / "no-toy.json")
    monkeypatch.setattr(findings, "paper_scale_runs", lambda *args: 1)
    assert "1 results-table row at the paper's scale has a run" in findings.findings_box(tmp_path / "no-toy.json")


def test_rank_correlation_ranks_ties_and_bounds_the_coefficient_by_a_bootstrap_interval():
    assert evidence.rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]).rho == pytest.approx(1.0)
    assert evidence.rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]).rho == pytest.approx(-1.0)
    # Ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3): covariance 4.5, squared spreads 4.5 and 5.
    assert evidence.rank_correlation([1, 5, 5, 9], [1, 2, 3, 4]).rho == pytest.approx(math.sqrt(4.5 / 5))
    assert math.isnan(evidence.rank_correlation([1, 1, 1], [1, 2, 3]).rho)
    monotone = evidence.rank_correlation(list(range(10)), [x**2 for x in range(10)])
    assert monotone.low == pytest.approx(1.0) and monotone.high == pytest.approx(1.0) and monotone.excludes_zero
    scattered = evidence.rank_correlation(list(range(8)), [3, 1, 4, 1, 5, 9, 2, 6])
    assert scattered.low < 0 < scattered.high and not scattered.excludes_zero
    assert str(scattered).endswith(
        "(95 % bootstrap interval " + f"{scattered.low:.2f} to {scattered.high:.2f}, 8 pairs)"
    )
    assert evidence.rank_correlation(list(range(8)), [3, 1, 4, 1, 5, 9, 2, 6], seed=0) == scattered  # seeded


def test_the_masking_chapter_reads_its_correlation_from_the_interval():
    from pagcore.book.masking import correlation_sentence

    def scores(pairs):
        return {
            f"run {i}": {
                "reference": "teacher",
                "alignment": a,
                "robust_l2": r,
                "configuration": f"recipe {i}",
                "objective": "cross_entropy" if i < 2 else "pag",
            }
            for i, (a, r) in enumerate(pairs)
        }

    few = correlation_sentence(scores([(0.1, 0.2), (0.3, 0.1), (0.2, 0.4), (0.4, 0.3)]))
    assert "Spearman rank correlation" in few and "4 configurations cannot tell this correlation from none" in few
    rising = correlation_sentence(scores([(0.1 * i, 0.05 * i) for i in range(1, 9)]))
    assert "the interval excludes 0: the better aligned runs are the more robust ones." in rising
    assert "no correlation yet" in correlation_sentence(scores([(0.1, 0.2), (0.3, 0.1)]))
    # Runs aligned with an adversarially trained model by construction are left out in a second reading.
    built = scores([(0.1 * i, 0.05 * i) for i in range(1, 9)])
    for name in ("run 6", "run 7"):
        built[name]["built_in"] = True
    both = correlation_sentence(built)
    assert both.startswith("Across the 8 training configurations scored against the same reference")
    assert "Without the 2 adversarially trained or RIGD configurations, which align with an adversarially" in both
    # The second reading says what its configurations are.
    assert "construction, over 6 configurations (4 PAG and 2 vanilla), the Spearman rank correlation" in both
    # Two seeds of one recipe are one point, the mean of theirs, and the bootstrap resamples recipes.
    built["run 7"]["configuration"] = "recipe 6"
    seeded = correlation_sentence(built)
    assert seeded.startswith("Across the 7 training configurations (8 runs, the seeds of a configuration averaged")
    assert "7 pairs" in seeded and "Without the one adversarially trained or RIGD configuration, which aligns" in seeded


def test_the_masking_chapter_names_the_checklists_run_without_the_targeted_step():
    from pagcore.book.masking import strong_attack_sentence

    older = checklist(targeted=False, current=False)
    evaluated = {
        "class mean": (None, {("checks", "linf"): older, ("checks", "l2"): checklist()}),
        "vanilla": (None, {("pgd20", "linf"): {}}),
    }
    sentence = strong_attack_sentence(evaluated)
    assert sentence.startswith("1 of the 2 stored checklists use other references than the current checks")
    assert sentence.endswith("(class mean ℓ∞).")
    evaluated["class mean"][1][("checks", "linf")] = checklist()
    assert (
        strong_attack_sentence(evaluated)
        == "All 2 stored checklists were judged against the checks' current references."
    )
    del evaluated["class mean"][1][("checks", "linf")]
    assert strong_attack_sentence(evaluated).startswith("The one stored checklist was judged")
    assert strong_attack_sentence({}) == "No checklist is stored yet."


def test_the_checks_table_marks_a_failure_that_older_references_leave_unread():
    from pagcore.book.masking import checks_table

    def stored(failed, current):
        entry = checklist(failed, targeted=False, current=current)
        entry["results"]["checks"] += [{"name": "black_box", "passed": False}, {"name": "gradients", "passed": True}]
        entry["results"]["checks"][0]["passed"] = True
        return entry

    rows = checks_table(
        {
            "old": (None, {("checks", "linf"): stored(["black_box"], False)}),
            "new": (None, {("checks", "linf"): stored(["black_box"], True)}),
        },
        "linf",
    ).splitlines()
    assert "| old | not run | not run | pass | not read | not run | pass |" in rows
    assert "| new | not run | not run | pass | FAIL | not run | pass |" in rows


def test_the_masking_conclusion_compares_a_failing_row_with_vanilla_of_its_own_scale():
    from pagcore.book.masking import conclusion

    class Run:
        def __init__(self, objective, scale, failed=()):
            self.params = {"objective": objective, "dataset": "cifar10", "scale": scale, "seed": 0}
            self.entries = {("checks", "linf"): checklist(failed), ("checks", "l2"): checklist(failed)}

    def score(run, alignment):
        p = run.params
        return {"alignment": alignment, "confidence": 0.3, "reference": "robust", **{k: p[k] for k in p}}

    class_mean, cpu, paper = (
        Run("pag", "cpu", ["black_box"]),
        Run("cross_entropy", "cpu"),
        Run("cross_entropy", "paper"),
    )
    evaluated = {"class mean": (class_mean, class_mean.entries), "vanilla (paper)": (paper, paper.entries)}
    evaluated["vanilla (cpu)"] = (cpu, cpu.entries)
    scores = {
        "vanilla (paper)": score(paper, 0.10),
        "vanilla (cpu)": score(cpu, 0.20),
        "class mean": score(class_mean, 0.22),
    }
    spread = evidence.AlignmentSpread("a row", 0.02, 3)  # two scores differ beyond 2 · √2 · 0.02 ≈ 0.057
    text = conclusion(evaluated, scores, spread)
    assert "class mean fails the black-box check; its gradient alignment (0.22) is not shown to be above" in text
    assert "vanilla's (0.20), its targeted confidence" in text
    assert text.endswith("(a gap must exceed 0.057, the margin the score's seed spread sets).")
    assert conclusion(evaluated, scores, None).endswith("so no gap is read).")  # no measured spread: no gap read
    scores["class mean"]["alignment"] = 0.40
    text = conclusion(evaluated, scores, spread)
    assert "(0.40) is above vanilla's (0.20)" in text and "Whatever" not in text


def test_the_masking_chapter_sizes_autoattack_s_gap_over_pgd_on_adversarially_trained_runs():
    from pagcore.book.masking import loss_gap_sentence

    subset = {"size": 500, "indices_sha256": "a"}

    class Run:
        def __init__(self, objective, threat, lam=None):
            self.params = {"objective": objective, "adversary": {"threat": threat}, "lam": lam}

    def attack(robust, subset=subset):
        return {"results": {"robust": robust}, "settings": {"subset": subset}}

    teacher = Run("adversarial", "linf")
    entries = {("pgd20", "linf"): attack(0.324), ("autoattack", "linf"): attack(0.248)}
    boosted = Run("adversarial", "linf", lam=0.4)  # adversarial training with the PAG term: not a baseline
    elsewhere = {("pgd20", "linf"): attack(0.3), ("autoattack", "linf"): attack(0.2, {"size": 100})}
    sentence = loss_gap_sentence(
        {"teacher": (teacher, entries), "boosted": (boosted, entries), "other subset": (teacher, elsewhere)}
    )
    assert "each pair of numbers on one seeded subset of the test set" in sentence
    assert "teacher keeps 32.4% under PGD-20 and 24.8% under AutoAttack (ℓ∞, 500 images)" in sentence
    assert "boosted" not in sentence and "other subset" not in sentence
    assert loss_gap_sentence({}).startswith("No adversarially trained run")


def test_runs_of_one_row_that_differ_in_lambda_or_k_are_labelled_apart(tmp_path):
    from pagcore.book.masking import attacks_table, evaluated_runs, run_label
    from pagcore.store.runs import RunStore

    store = RunStore(tmp_path)
    row = {"dataset": "cifar10", "scale": "cpu", "objective": "pag", "source": "class_mean", "seed": 0}
    runs = {
        "row": store.create("row", {**row, "lam": 0.4, "classes_per_image": 2}),
        "grid": store.create("grid", {**row, "lam": 1.0, "classes_per_image": 2}),
        "k": store.create("k", {**row, "lam": 0.4, "classes_per_image": 5}),
        "again": store.create("again", {**row, "lam": 0.4, "classes_per_image": 2, "epochs": 5}),
    }
    assert [run_label(run) for run in runs.values()] == [
        "CIFAR-10 class mean (cpu)",
        "CIFAR-10 class mean, λ = 1 (cpu)",
        "CIFAR-10 class mean, k = 5 (cpu)",
        "CIFAR-10 class mean (cpu)",
    ]
    settings = {"subset": {"size": 500}, "budgets": "real", "norm": "l2"}
    attack = {"settings": settings, "results": {"clean": 0.3, "robust": 0.2}}
    for run in runs.values():
        (run.path / "evaluations").mkdir()
        (run.path / "evaluations" / "pgd20_ball-l2-x.json").write_text(json.dumps({"name": "pgd20_ball", **attack}))
    evaluated = evaluated_runs(list(runs.values()))
    assert len(evaluated) == 4 and "CIFAR-10 class mean (cpu) [again]" in evaluated
    assert attacks_table(evaluated, "linf").count("\n") == 2  # header, rule and the empty-state row
    l2 = attacks_table(evaluated, "l2")
    assert "| CIFAR-10 class mean, λ = 1 (cpu) | 500 | 30.0% | not run | 20.0% |" in l2


def test_a_run_whose_row_no_configuration_resolves_keeps_the_row_s_label():
    from pagcore.book.masking import run_label

    class Run:
        params = {"dataset": "cifar10", "scale": "cpu", "objective": "pag", "source": "score", "lam": 3.0}

    assert run_label(Run()) == "CIFAR-10 score-based (cpu)"  # a score run without its denoiser: no row to compare


def test_a_run_label_names_an_architecture_other_than_the_resnet():
    from pagcore.book.masking import run_label

    class Run:
        params = {"dataset": "cifar10", "scale": "cpu", "objective": "cross_entropy", "architecture": "vit"}

    assert run_label(Run()) == "CIFAR-10 ViT vanilla (cpu)"
    Run.params = {**Run.params, "architecture": "resnet18"}
    assert run_label(Run()) == "CIFAR-10 vanilla (cpu)"


def test_the_masking_conclusion_tells_a_checklist_to_run_again_from_one_never_run():
    from pagcore.book.masking import conclusion

    class Run:
        params = {"objective": "pag", "dataset": "cifar10", "scale": "cpu", "seed": 0}

    older = checklist(["black_box"], targeted=False, current=False)
    evaluated = {
        "passing": (Run(), {("checks", "linf"): checklist(), ("checks", "l2"): checklist()}),
        "older": (Run(), {("checks", "linf"): older, ("checks", "l2"): checklist()}),
        "never": (Run(), {("pgd20_ball", "l2"): {}}),
    }
    text = conclusion(evaluated, {}, None)
    assert "Every check passes for passing" in text
    assert "must be run again with its current attacks on older: its stored one fails only a check whose" in text
    assert text.endswith("It has not been run on 1 other PAG-trained run: never.")
    many = {f"run {i}": (Run(), {}) for i in range(5)}
    assert conclusion(many, {}, None).endswith(
        "It has not been run on 5 PAG-trained runs, all named in the tables below."
    )


def test_the_masking_chapter_says_how_far_the_in_ball_start_moves_l2_pgd():
    from pagcore.book.masking import start_sentence

    def pair(paper, ball, subset=500):
        def entry(robust, size):
            return {"results": {"robust": robust}, "settings": {"subset": {"size": size}}}

        return {("pgd20", "l2"): entry(paper, 500), ("pgd20_ball", "l2"): entry(ball, subset)}

    same = start_sentence({"a": (None, pair(0.40, 0.402)), "b": (None, pair(0.30, 0.30))})
    assert same.startswith("On the 2 runs with both starts on the same images, PGD-20 started inside the ball")
    assert "within 0.2 points" in same and "+0.10 points" in same and same.endswith("not change the ℓ2 numbers here.")
    moved = start_sentence({"a": (None, pair(0.40, 0.37)), "other images": (None, pair(0.1, 0.5, subset=100))})
    assert "moves PGD-20's ℓ2 accuracy by up to -3.0 points" in moved
    assert start_sentence({}).startswith("No run has both starts")


def test_the_rule_says_which_rows_carry_their_own_spread_and_which_the_widest():
    noise = evidence.Noise(
        {"vanilla": {"linf": 0.001, "l2": 0.002}, "one_image": {"linf": 0.05, "l2": 0.04}},
        {"vanilla": 3, "one_image": 3},
        "CIFAR-10",
        own=frozenset({"vanilla", "one_image"}),
    )
    words = noise.rule_words({"vanilla": "Vanilla", "one_image": "One image"})
    assert words.startswith("Vanilla and One image are judged with their own seed spread")
    assert "takes the widest measured (clean 0.0, ℓ∞ 5.0, ℓ2 4.0 points)" in words
    # A table whose every row has its own spread borrows nothing, and the sentence says no more.
    alone = noise.rule_words({"vanilla": "Vanilla", "one_image": "One image"}, rows=["vanilla", "one_image"])
    assert alone == "Vanilla and One image are judged with their own seed spread."
    assert "every other row" in noise.rule_words({}, rows=["vanilla", "class_mean"])
    assert noise.borrowed("STL-10").rule_words({}).startswith("Every row is judged with the widest seed spread")
    assert "Here the widest" not in words  # the clean spreads do not set one row apart


def test_a_widest_spread_set_by_one_row_alone_is_named_as_cautious():
    spreads = {
        "vanilla": {"clean": 0.002, "linf": 0.0, "l2": 0.001},
        "one_image": {"clean": 0.04, "linf": 0.05, "l2": 0.05},
    }
    noise = evidence.Noise(spreads, {"vanilla": 3, "one_image": 3}, "CIFAR-10", own=frozenset({"vanilla"}))
    labels = {"one_image": "One Image"}
    apart = (
        "the widest is One Image's alone, that of the other rows measured over seeds (vanilla) at most clean 0.2, "
        "ℓ∞ 0.0, ℓ2 0.1 points"
    )
    assert noise.widest_apart(labels).startswith(apart) and "may hide a real gap" in noise.widest_apart(labels)
    assert f"Here {apart}" in noise.rule_words(labels)
    # Another row within twice the widest in one accuracy: no row sets it alone.
    spreads["nearest_neighbor"] = {"clean": 0.03, "linf": 0.001, "l2": 0.001}
    assert noise.widest_apart(labels) == ""


def test_a_results_table_holds_the_score_based_row_with_its_stated_lambda(tmp_path, monkeypatch):
    from pagcore.orchestrate import book_runs
    from pagcore.orchestrate.experiments import RealDataExperiment
    from pagcore.store.runs import RunStore
    from pagcore.train.trainer import run_name_for

    config = RealDataExperiment("stl10", {"scale": "cpu"}).config("score", **book_runs.score_overrides("stl10"))
    assert config.objective.lam == book_runs.SCORE_LAMBDA_CHOSEN["stl10"]
    run = RunStore(tmp_path).create(run_name_for(config, "real"), config.identity())
    run.write_json("record.json", {"kind": "real", "status": "complete", "sessions": [], "wall_seconds": 1})
    run.write_json("metrics.json", {"clean": 0.3, "linf": 0.1, "l2": 0.2, "test_images": 5000})
    table = findings.stored_table("stl10", "cpu", str(tmp_path))
    assert list(table)[-1] == "score" and table["score"].name == run.name
    assert table["vanilla"] is None
    monkeypatch.delitem(book_runs.SCORE_DENOISERS, "stl10")
    assert "score" not in findings.stored_table("stl10", "cpu", str(tmp_path))


def test_the_radius_figure_is_read_per_threat_model_by_check_1():
    from pagcore.book.masking import radius_reading

    def checked(accuracy, passed, eps=0.031):
        numbers = {"eps": [eps * m for m in (1, 4, 32)], "accuracy": accuracy}
        check = {"name": "eps_monotone", "passed": passed, "numbers": numbers}
        return {"settings": {"eps": eps}, "results": {"checks": [check]}}

    evaluated = {
        "Vanilla": (
            None,
            {
                ("checks", "linf"): checked([0.0, 0.0, 0.0], True),
                ("checks", "l2"): checked([0.01, 0.0, 0.0], True, 0.5),
            },
        ),
        "Class Mean": (None, {("checks", "linf"): checked([0.19, 0.195, 0.01], True)}),  # a rise check 1 allows
        "One Image": (None, {("checks", "l2"): checked([0.1, 0.15, 0.002], False, 0.5)}),
    }
    reading = radius_reading(evaluated)
    assert reading.startswith(
        "In the figure, under ℓ∞, none of the 2 curves rises by more than check 1 allows as the radius grows, and "
        "at 32× the radius the highest is Class Mean at 1.0%; under ℓ2, One Image rises by more than check 1 allows"
    )
    assert reading.endswith("at 32× the radius the highest is One Image at 0.2%.")
    evaluated["Class Mean"] = (None, {("checks", "linf"): checked([0.19, 0.05, 0.0], True)})
    assert "at 32× the radius every curve is at 0.0%; under ℓ2" in radius_reading(evaluated)
    assert "No run has a checklist" in radius_reading({})


def test_the_radius_figure_has_a_row_of_panels_per_dataset_and_labels_without_it():
    from types import SimpleNamespace

    from pagcore.book.masking import radius_panels

    def checked(eps):
        numbers = {"eps": [eps * m for m in (1, 4)], "accuracy": [0.3, 0.0]}
        return {"settings": {"eps": eps}, "results": {"checks": [{"name": "eps_monotone", "numbers": numbers}]}}

    def run(dataset):
        return SimpleNamespace(params={"dataset": dataset})

    evaluated = {
        "CIFAR-10 vanilla (cpu)": (
            run("cifar10"),
            {("checks", "linf"): checked(0.031), ("checks", "l2"): checked(0.5)},
        ),
        "STL-10 vanilla (cpu)": (run("stl10"), {("checks", "l2"): checked(1.5)}),
        "STL-10 class mean (cpu)": (run("stl10"), {("pgd20", "linf"): {}}),  # no checklist: no curve
    }
    panels = radius_panels(evaluated)
    assert list(panels) == ["CIFAR-10, ℓ∞", "CIFAR-10, ℓ2", "STL-10, ℓ∞", "STL-10, ℓ2"]
    assert panels["STL-10, ℓ2"] == {"vanilla (cpu)": ([1.0, 4.0], [0.3, 0.0])}
    assert panels["STL-10, ℓ∞"] == {} and list(panels["CIFAR-10, ℓ∞"]) == ["vanilla (cpu)"]
    del evaluated["CIFAR-10 vanilla (cpu)"], evaluated["STL-10 vanilla (cpu)"]
    assert radius_panels(evaluated) == {"ℓ∞": {}, "ℓ2": {}}  # no checklist anywhere: the empty panels


def test_the_pag_score_scatter_marks_the_runs_aligned_by_construction_apart():
    from pagcore.book.masking import scatter_groups

    scores = {
        "vanilla": {"dataset": "cifar10", "alignment": 0.1, "robust_l2": 0.0, "built_in": False},
        "teacher": {"dataset": "cifar10", "alignment": 0.9, "robust_l2": 0.5, "built_in": True},
        "stl": {"dataset": "stl10", "alignment": 0.2, "robust_l2": 0.1, "built_in": False},
    }
    assert scatter_groups(scores) == {
        "CIFAR-10": [(0.1, 0.0)],
        "CIFAR-10, adversarially trained or RIGD": [(0.9, 0.5)],
        "STL-10": [(0.2, 0.1)],
    }
