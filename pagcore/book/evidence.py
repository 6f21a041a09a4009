"""The book's rule for evidence: when an accuracy may be read as robustness, and when two rows may be ranked.

Three parts, applied by every verdict the book computes:

1. **Chance.** A constant classifier that always answers one class gets 1/C of a class-balanced test set
   right, and exactly as much under any attack, since no perturbation changes its answer. A model whose
   clean accuracy is under ``FIT_FACTOR`` times that hardly fits its labels: its robust accuracy is that of
   a near-chance classifier and counts neither for nor against the paper's claim. A robust accuracy no
   higher than 1/C beyond its noise is no robustness in that threat model, however far above vanilla's
   it lies: the constant classifier keeps as much.
2. **Noise.** Two accuracies differ only when their gap exceeds ``SIGNIFICANCE`` standard errors of the
   difference. That error combines, as independent errors, each row's spread over training seeds and
   each number's sampling error on its test subset. A row's seed spread is its own where
   ``OWN_SPREAD_SEEDS`` seeds measure it, and otherwise the widest spread measured on any row (see
   :class:`Noise`).
3. **Robust among correct.** Robust accuracy divided by clean accuracy: the share of correctly classified
   test points that the attack does not flip. It separates "robust" from "rarely right to begin with"; a
   constant classifier scores 1 on it, which is why it is read beside, never instead of, the plain number.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from pagcore.book.text import METRIC_COLUMNS, NORM_WORDS, listed, percent
from pagcore.paper import reported

FIT_FACTOR = 2.0
"""A model must reach this many times chance clean accuracy before its robust accuracy is evidence."""

THREAT_METRICS = ("linf", "l2")

BASELINE = "vanilla"
"""The row every other row is judged against."""


def threat_words(norms: Collection[str]) -> str:
    """Threat models in words, in the rule's order: "ℓ2", "ℓ∞ and ℓ2" ("no threat model" for none)."""
    named = [NORM_WORDS[norm] for norm in THREAT_METRICS if norm in norms]
    return listed(named) if named else "no threat model"


def chance(num_classes: int) -> float:
    """Clean and robust accuracy of a constant classifier on a class-balanced test set."""
    return 1.0 / num_classes


def chance_metrics(num_classes: int) -> dict[str, float]:
    """The constant classifier's row: the same accuracy clean and under every attack."""
    return {key: chance(num_classes) for key in ("clean", *THREAT_METRICS)}


def fits_labels(clean: float, num_classes: int, margin: float = 0.0) -> bool:
    """Whether clean accuracy is far enough above chance for robust accuracy to count as evidence:
    above ``FIT_FACTOR`` times chance by more than ``margin`` (the noise on the clean accuracy)."""
    return clean - FIT_FACTOR * chance(num_classes) > margin


def robust_among_correct(robust: float | None, clean: float | None) -> float | None:
    """The share of correctly classified points that stay correct under attack (None without both)."""
    if robust is None or not clean:
        return None
    return robust / clean


def sampling_std(accuracy: float, images: int) -> float:
    """Standard error of an accuracy measured on ``images`` test images (binomial)."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / images)


@dataclass(frozen=True)
class Measured:
    """An accuracy, the number of test images behind it, and the row whose seed spread it carries
    (empty: a row without a measured spread of its own)."""

    value: float
    images: int
    row: str = ""

    @classmethod
    def of(cls, metrics: Mapping[str, Any], key: str, row: str = "") -> Measured:
        """A run's whole-test-set accuracy ``key``, from its metrics."""
        return cls(metrics[key], metrics["test_images"], row)

    @classmethod
    def attacked(cls, entry: Mapping[str, Any], row: str = "") -> Measured:
        """A stored evaluation's robust accuracy, on the subset it was measured on."""
        return cls(entry["results"]["robust"], entry["settings"]["subset"]["size"], row)


SIGNIFICANCE = 2.0
"""Two numbers differ only when their gap exceeds this many standard errors of the difference: for
normal errors of known size, two rows that are in truth equal are told apart about one time in
twenty (more often when the spreads come from few seeds)."""


def side(gap: float, error: float) -> int:
    """The rule's one test: +1 when ``gap`` exceeds :data:`SIGNIFICANCE` standard errors ``error``, -1 when
    it falls below minus that, 0 when the noise cannot tell it from none."""
    if abs(gap) <= SIGNIFICANCE * error:
        return 0
    return 1 if gap > 0 else -1


OWN_SPREAD_SEEDS = 3
"""A row's seed spread counts as its own only when this many seeds measure it; a spread from two
seeds has one degree of freedom and is too often far too small to trust."""


@dataclass(frozen=True)
class AlignmentSpread:
    """How far the seed alone moves an alignment score (the PAG score, or the alignment with the
    score-based targets): the widest standard deviation over seeds among the configurations stored with
    :data:`OWN_SPREAD_SEEDS` or more seeds, each scored against one reference on one image subset.
    Three seeds give a standard deviation of two degrees of freedom; taking the widest over many
    configurations is what keeps its margin from being too narrow."""

    label: str
    std: float
    seeds: int

    @property
    def margin(self) -> float:
        """The gap two single runs' scores must exceed to be told apart: :data:`SIGNIFICANCE` standard
        errors of a difference of two runs, each carrying the seed spread."""
        return SIGNIFICANCE * math.sqrt(2) * self.std

    def words(self, score: str = "PAG scores") -> str:
        """The margin and where it comes from, as a clause: 'two PAG scores differ when ...'."""
        return (
            f"two {score} differ when more than {self.margin:.3f} apart ({SIGNIFICANCE:g} standard errors of the "
            f"difference of two runs, from the widest standard deviation over seeds measured, {self.std:.3f} over "
            f"{self.seeds} seeds of {self.label})"
        )


def aligned_above(spread: AlignmentSpread | None, mine: float, theirs: float) -> bool:
    """Whether a PAG score ``mine`` is above ``theirs`` beyond ``spread`` (never while it is not measured:
    callers that judge a claim must check for that first, since a gap not read is no gap found)."""
    return spread is not None and mine - theirs > spread.margin


UNMEASURED_SPREAD = "the score's spread over seeds is not measured, so no gap is read"


def spread_words(spread: AlignmentSpread | None) -> str:
    """How two PAG scores are told apart, short enough for a parenthesis (the source of the margin is
    in :meth:`AlignmentSpread.words`, which the rule of evidence gives once)."""
    return (
        UNMEASURED_SPREAD
        if spread is None
        else f"a gap must exceed {spread.margin:.3f}, the margin the score's seed spread sets"
    )


def alignment_spread(scores_by_label: Mapping[str, Sequence[float]]) -> AlignmentSpread | None:
    """The widest :class:`AlignmentSpread` among ``scores_by_label`` (one PAG score per seed of a
    configuration); None until one has :data:`OWN_SPREAD_SEEDS` seeds."""
    spreads = [
        AlignmentSpread(label, statistics.stdev(scores), len(scores))
        for label, scores in scores_by_label.items()
        if len(scores) >= OWN_SPREAD_SEEDS
    ]
    return max(spreads, key=lambda spread: spread.std, default=None)


APART_FACTOR = 2.0
"""How many times every other row's spread the widest must be before the book says one row sets it alone."""


@dataclass(frozen=True)
class Noise:
    """The spread of accuracies over training seeds: per row and metric, the sample standard deviation
    over that row's seeds; where it was measured; and which rows may use their own spread. Every other
    row takes the widest spread measured on any row, the cautious choice for a row nobody has
    repeated."""

    spreads: Mapping[str, Mapping[str, float]]
    seeds: Mapping[str, int]
    measured_on: str
    own: frozenset[str] = frozenset()
    alignment: AlignmentSpread | None = None  # the PAG score's, beside the accuracies'

    def widest(self, metric: str) -> float:
        return max(spread.get(metric, 0.0) for spread in self.spreads.values())

    def widest_apart(self, labels: Mapping[str, str]) -> str:
        """A clause for where one row alone sets the widest spread, at over :data:`APART_FACTOR` times
        every other row's in every accuracy: the rows that take it are judged far more cautiously than
        the measured rows suggest, so their 'within noise' may hide a real gap (empty otherwise)."""
        rows = {max(self.spreads, key=lambda row: self.spreads[row].get(key, 0.0)) for key, _ in METRIC_COLUMNS}
        if len(rows) != 1 or len(self.spreads) < 2:
            return ""
        (row,) = rows
        others = {
            key: max(spread.get(key, 0.0) for other, spread in self.spreads.items() if other != row)
            for key, _ in METRIC_COLUMNS
        }
        if any(self.widest(key) <= APART_FACTOR * others[key] for key, _ in METRIC_COLUMNS):
            return ""
        at_most = ", ".join(f"{name} {100 * others[key]:.1f}" for key, name in METRIC_COLUMNS)
        measured = listed([labels.get(other, other) for other in self.spreads if other != row])
        return (
            f"the widest is {labels.get(row, row)}'s alone, that of the other rows measured over seeds ({measured}) "
            f"at most {at_most} points, so a row that takes it is judged cautiously: its 'within noise' may hide a "
            "real gap"
        )

    def spread(self, row: str, metric: str) -> float:
        """The seed spread that ``row``'s ``metric`` carries."""
        return self.spreads[row].get(metric, 0.0) if row in self.own else self.widest(metric)

    def borrowed(self, words: str) -> Noise:
        """The same spreads read where no row has seeds of its own (another dataset, another
        architecture, named by ``words``): every row takes the widest."""
        return replace(self, own=frozenset(), measured_on=f"{self.measured_on}, borrowed for {words}")

    def error(self, metric: str, m: Measured) -> float:
        """The standard error of one accuracy: its row's seed spread and its sampling error."""
        return math.hypot(self.spread(m.row, metric), sampling_std(m.value, m.images))

    def standard_error(self, metric: str, a: Measured, b: Measured) -> float:
        """The standard error of ``a - b``: both rows' seed spreads and both sampling errors."""
        return math.hypot(self.error(metric, a), self.error(metric, b))

    def tolerance(self, metric: str, a: Measured, b: Measured) -> float:
        """The gap two accuracies must exceed to be told apart."""
        return SIGNIFICANCE * self.standard_error(metric, a, b)

    def differ(self, metric: str, a: Measured, b: Measured) -> int:
        """+1 if ``a`` is above ``b`` by more than the tolerance, -1 if below, 0 if they cannot be told apart."""
        return side(a.value - b.value, self.standard_error(metric, a, b))

    def fits(self, clean: Measured, num_classes: int) -> bool:
        """:func:`fits_labels` with the margin the rule gives a clean accuracy: its own noise."""
        return fits_labels(clean.value, num_classes, SIGNIFICANCE * self.error("clean", clean))

    def above_chance(self, metric: str, m: Measured, num_classes: int) -> bool:
        """Whether a robust accuracy keeps more than a constant classifier beyond its noise (the
        constant classifier has neither a seed spread nor a sampling error)."""
        return side(m.value - chance(num_classes), self.error(metric, m)) > 0

    def widest_words(self) -> str:
        """The widest seed spread of each accuracy, e.g. 'clean 3.8, ℓ∞ 5.1, ℓ2 4.8 points'."""
        return ", ".join(f"{name} {100 * self.widest(key):.1f}" for key, name in METRIC_COLUMNS) + " points"

    def rule_words(self, labels: Mapping[str, str], rows: Collection[str] | None = None) -> str:
        """Which spread each row is judged with, in a sentence: its own, or the widest measured. With
        ``rows``, the rows of the table at hand: once each has its own, the widest is not mentioned."""
        if not self.own:
            spread = f"{self.widest_words()}, on {self.measured_on}"
            return f"Every row is judged with the widest seed spread measured ({spread})."
        own = listed([labels.get(row, row) for row in self.spreads if row in self.own])
        head = (
            f"{own[0].upper()}{own[1:]} {'are' if len(self.own) > 1 else 'is'} judged with "
            f"{'their' if len(self.own) > 1 else 'its'} own seed spread"
        )
        if rows is not None and set(rows) <= self.own:
            return head + "."
        apart = self.widest_apart(labels)
        return (
            f"{head}; every other row, trained with fewer seeds, takes the widest measured "
            f"({self.widest_words()}), so it must clear a wider gap to be told apart."
            + (f" Here {apart}." if apart else "")
        )

    def words(self, metric: str, labels: Mapping[str, str]) -> str:
        """Each measured row's spread of ``metric`` and its seeds, e.g. 'Vanilla 0.1 points (3 seeds)'."""
        return ", ".join(
            f"{labels.get(row, row)} {100 * spread.get(metric, 0.0):.1f} points ({self.seeds[row]} seeds)"
            for row, spread in self.spreads.items()
        )


def mean_difference(before: Sequence[float], after: Sequence[float]) -> tuple[float, float]:
    """The mean of ``after`` minus the mean of ``before`` (values over seeds, two or more each) and its
    standard error: each side's variance over its seeds, divided by how many there are."""
    error = math.sqrt(statistics.variance(before) / len(before) + statistics.variance(after) / len(after))
    return statistics.fmean(after) - statistics.fmean(before), error


def compare(
    noise: Noise, metric: str, a: Mapping[str, float], b: Mapping[str, float], rows: tuple[str, str] = ("", "")
) -> int:
    """:meth:`Noise.differ` for two runs' metrics (each with its ``test_images``), of ``rows``."""
    return noise.differ(metric, Measured.of(a, metric, rows[0]), Measured.of(b, metric, rows[1]))


def seed_noise(metrics_by_row: Mapping[str, Sequence[Mapping[str, float]]], measured_on: str) -> Noise | None:
    """The measured noise: per row with at least two seeds, the sample standard deviation of each
    metric over its seeds (None when no row has two)."""
    spreads, seeds = {}, {}
    for row, runs in metrics_by_row.items():
        if len(runs) < 2:
            continue
        keys = set.intersection(*(set(m) for m in runs)) & {"clean", *THREAT_METRICS}
        spreads[row] = {key: statistics.stdev(m[key] for m in runs) for key in sorted(keys)}
        seeds[row] = len(runs)
    if not spreads:
        return None
    own = frozenset(row for row, n in seeds.items() if n >= OWN_SPREAD_SEEDS)
    return Noise(spreads=spreads, seeds=seeds, measured_on=measured_on, own=own)


def separated(values: Mapping[str, Measured], metric: str, noise: Noise) -> dict[str, list[str]]:
    """Each row, best first, with the rows it is above beyond the noise (an empty list: none). Being
    within the noise is not transitive (a may beat c while b is within the noise of both), so the
    ranking is given pair by pair, never as a chain that would read as a tie."""
    order = sorted(values, key=lambda row: -values[row].value)
    return {row: [other for other in order if noise.differ(metric, values[row], values[other]) == 1] for row in order}


def separation_words(above: Mapping[str, list[str]], labels: Mapping[str, str]) -> str:
    """:func:`separated` in words: 'A is above B and C, B above C; no other pair is told apart'."""
    named = [(labels.get(row, row), [labels.get(o, o) for o in below]) for row, below in above.items() if below]
    if not named:
        return "no two rows are told apart by the noise"
    pairs = sum(len(below) for _, below in named)
    total = len(above) * (len(above) - 1) // 2
    clauses = [f"{row} {'is ' if i == 0 else ''}above {listed(below)}" for i, (row, below) in enumerate(named)]
    rest = "" if pairs == total else "; no other pair is told apart by the noise"
    return ", ".join(clauses) + rest


def paper_noise() -> Noise:
    """The paper's own seed spread (its Table 4, one image over three seeds), lent to every row of the
    paper's tables: the paper's rows are ranked by the same rule as ours."""
    bars = reported.SEED_ERROR_BARS
    return Noise({"paper, Table 4": bars["std"]}, {"paper, Table 4": bars["seeds"]}, "the paper's Table 4")


@dataclass(frozen=True)
class Judgement:
    """What one row's numbers say against vanilla under the rule, with the reasons in words."""

    row: str
    verdict: str  # one of VERDICTS
    reasons: tuple[str, ...]

    norms: tuple[str, ...] = ()  # the threat models in which the row is evidence

    def __post_init__(self) -> None:
        # Callers compare verdicts with string literals: a misspelt one would match none of them silently.
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; the rule's verdicts are {', '.join(VERDICTS)}")

    @property
    def is_evidence(self) -> bool:
        return self.verdict == "evidence"

    @property
    def supports(self) -> bool:
        """Evidence in at least one threat model."""
        return self.verdict in ("evidence", "partial evidence")


VERDICTS = (
    "evidence",
    "partial evidence",
    "near chance",
    "not more robust",
    "within noise",
    "masking suspected",
    "unchecked",
)
"""evidence: the row fits its labels, beats vanilla beyond the noise under PGD and AutoAttack in both
threat models, keeps more than chance beyond the noise under each of them, and passes the masking
checklist; partial evidence: all of that in one threat model, while in the other its strongest attack
leaves no more than chance (a threat model at chance counts neither way: its comparisons with vanilla
and its AutoAttack are not asked for). The other verdicts name the first reason, in this order, why a
row is neither (near chance: its clean accuracy is not above twice chance beyond its noise, or its
robust accuracy in every threat model not above chance; unchecked: AutoAttack or the checklist has not
been run on it, or the checklist must be run again with its current attacks)."""

ATTACK_WORDS = {
    "pgd20": "PGD-20",
    "pgd20_ball": "PGD-20 started in the ball",
    "pgd100": "PGD-100×5",
    "autoattack": "AutoAttack",
}
CHECK_WORDS = {
    "eps_monotone": "monotone",
    "eps_reaches_zero": "reaches-zero",
    "more_iterations": "more-iterations",
    "black_box": "black-box",
    "transfer": "transfer",
    "gradients": "gradients",
}


def attack_words(key: tuple[str, str]) -> str:
    attack, norm = key
    return f"{ATTACK_WORDS.get(attack, attack)} {NORM_WORDS.get(norm, norm)}"


def judge(
    row: str,
    clean: float,
    robust: Mapping[tuple[str, str], Measured],
    vanilla: Mapping[tuple[str, str], Measured],
    *,
    noise: Noise,
    num_classes: int,
    failed_checks: Sequence[str] | None = None,
) -> Judgement:
    """Apply the rule to one row: its clean accuracy, and its robust accuracies keyed by (attack, norm)
    beside vanilla's under the same attacks, each carrying its own row's seed spread. The spread of a
    norm's PGD-20 accuracy stands for every attack in that norm (it is the only spread measured).
    ``failed_checks`` is None when the masking checklist has not been run on the row, or must be run
    again (:func:`failed_checks`)."""
    robust = {key: replace(m, row=row) for key, m in robust.items()}
    vanilla = {key: replace(m, row=BASELINE) for key, m in vanilla.items()}
    if not noise.fits(Measured(clean, _images(robust), row), num_classes):
        return Judgement(
            row,
            "near chance",
            (
                f"clean accuracy not above {FIT_FACTOR:g} × chance ({FIT_FACTOR * chance(num_classes):.0%}) by more "
                "than its noise",
            ),
        )
    shared = [key for key in robust if key in vanilla]
    if not shared:
        return Judgement(row, "not more robust", ("no attack",))
    # Each threat model is read at its strongest attack: the lowest accuracy any attack left (AutoAttack,
    # the trusted number, where another attack left as little). A stronger attack still to run can only
    # lower it, so a threat model at chance here stays at chance, and counts neither way after this.
    weakest = {
        norm: min(keys, key=lambda k: (robust[k].value, k[0] != "autoattack"))
        for norm in THREAT_METRICS
        if (keys := [key for key in robust if key[1] == norm])
    }
    above = [norm for norm, key in weakest.items() if noise.above_chance(norm, robust[key], num_classes)]
    short = [_chance_words(key, robust[key], noise, num_classes) for norm, key in weakest.items() if norm not in above]
    if not above and len(weakest) == len(THREAT_METRICS):
        return Judgement(row, "near chance", ("; ".join(short),))
    comparisons = {key: noise.differ(key[1], robust[key], vanilla[key]) for key in shared if key[1] in above}

    def gap(key: tuple[str, str]) -> str:
        # The two numbers and the gap the noise allows, so a reader can see why they are not told apart.
        allowed = 100 * noise.tolerance(key[1], robust[key], vanilla[key])
        return (
            f"{attack_words(key)} ({percent(robust[key].value)} against {percent(vanilla[key].value)}; a gap must "
            f"exceed {allowed:.1f} points)"
        )

    worse = [gap(key) for key, c in comparisons.items() if c < 0]
    if worse:
        return Judgement(row, "not more robust", tuple(f"below vanilla under {w}" for w in worse))
    tied = [gap(key) for key, c in comparisons.items() if c == 0]
    if tied:
        return Judgement(row, "within noise", (f"not told apart from vanilla under {', '.join(tied)}",))
    if failed_checks:
        words = [CHECK_WORDS.get(check, check) for check in failed_checks]
        return Judgement(row, "masking suspected", (f"fails the {', '.join(words)} check",))
    # AutoAttack is asked for where the row keeps more than chance, or where no attack has run at all.
    missing = [
        NORM_WORDS[norm]
        for norm in THREAT_METRICS
        if norm not in weakest or (norm in above and ("autoattack", norm) not in shared)
    ]
    if missing or failed_checks is None:
        what = [f"AutoAttack {', '.join(missing)}"] if missing else []
        what += ["the masking checklist with its current attacks"] if failed_checks is None else []
        return Judgement(row, "unchecked", (f"{' and '.join(what)} not run yet",))

    # The trusted numbers beside the verdict, so that "evidence" carries its size. No parentheses: the
    # reason is itself read inside the parentheses of a finding.
    def trusted(norms: Sequence[str]) -> str:
        return "with AutoAttack " + ", ".join(
            f"{NORM_WORDS[norm]} {percent(robust[('autoattack', norm)].value)} against vanilla's "
            f"{percent(vanilla[('autoattack', norm)].value)}"
            for norm in norms
        )

    if len(above) == len(THREAT_METRICS):
        return Judgement(
            row,
            "evidence",
            (f"more robust than vanilla and than chance beyond the noise under every attack, {trusted(above)}",),
            tuple(above),
        )
    return Judgement(
        row,
        "partial evidence",
        (
            f"more robust than vanilla and than chance beyond the noise under {threat_words(above)} "
            f"alone, {trusted(above)}, while {listed(short)}",
        ),
        tuple(above),
    )


def _chance_words(key: tuple[str, str], m: Measured, noise: Noise, num_classes: int) -> str:
    """Why a threat model's strongest attack leaves no robustness: what it leaves, against what a constant
    classifier keeps (below it, or above it by less than the noise)."""
    floor = chance(num_classes)
    left = f"{attack_words(key)} leaves {percent(m.value)}"
    if m.value <= floor:
        return f"{left}, no more than the {percent(floor)} a constant classifier keeps"
    allowed = 100 * SIGNIFICANCE * noise.error(key[1], m)
    return (
        f"{left}, above the {percent(floor)} a constant classifier keeps by less than the {allowed:.1f} points "
        "its noise allows"
    )


def _images(robust: Mapping[tuple[str, str], Measured]) -> int:
    """The test images behind a row's whole-test-set numbers (PGD-20), for the clean accuracy's noise."""
    return max((m.images for m in robust.values()), default=1)


WHITE_BOX_COMPARED = ("black_box", "transfer")
"""The checks that compare another attack with the strongest white-box attack of the checklist."""


def has_targeted_step(checklist: Mapping[str, Any]) -> bool:
    """Whether a stored checklist's strongest white-box attack ran AutoAttack's targeted APGD after
    PGD-100×5 (its more-iterations numbers then name the targeted attack)."""
    more = next(c for c in checklist["results"]["checks"] if c["name"] == "more_iterations")
    return "targeted_attack" in more["numbers"]


def judged_by_current_references(checklist: Mapping[str, Any]) -> bool:
    """Whether a stored checklist was judged against the checks' current references (a checklist that
    was stores them with its settings)."""
    return "references" in checklist.get("settings", {})


def unread_failures(checklist: Mapping[str, Any]) -> set[str]:
    """The checks whose stored failure does not stand under the checklist's current references (those
    stored with its settings). A checklist stored without them either ran PGD alone as its strongest
    white-box attack, and then a black-box or transfer failure may vanish against the targeted APGD
    step, or compared PGD-20 with that step in check 3, and then a more-iterations failure may vanish
    against PGD-100×5 alone. Its passes stand either way: each change can only make a check easier."""
    if judged_by_current_references(checklist):
        return set()
    return {"more_iterations"} if has_targeted_step(checklist) else set(WHITE_BOX_COMPARED)


def failed_checks(entries: Mapping[tuple[str, str], Any]) -> list[str] | None:
    """The masking checks a run fails in any threat model, from its stored evaluations (sorted, unique);
    None when the checklist has not been run in both threat models, or when its only failures are
    :func:`unread_failures` (a checklist to run again)."""
    checked = {norm: entry for (name, norm), entry in entries.items() if name == "checks"}
    if set(checked) != set(THREAT_METRICS):
        return None
    standing: set[str] = set()
    unread = False
    for entry in checked.values():
        fails, changed = set(entry["results"]["failed"]), unread_failures(entry)
        standing |= fails - changed
        unread = unread or bool(fails & changed)
    return None if unread and not standing else sorted(standing)


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rank correlation of ``n`` pairs and its percentile bootstrap interval (NaN where
    undefined: fewer than three pairs, or a constant sequence)."""

    rho: float
    low: float
    high: float
    n: int
    confidence: float

    def __str__(self) -> str:
        percent = f"{100 * self.confidence:g} %"
        return f"{self.rho:.2f} ({percent} bootstrap interval {self.low:.2f} to {self.high:.2f}, {self.n} pairs)"

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval tells the correlation from none (False where it is undefined)."""
        return self.low > 0 or self.high < 0


def rank_correlation(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> RankCorrelation:
    """Spearman's rho of ``a`` and ``b`` (paired) with a percentile bootstrap interval over the pairs."""
    if len(a) != len(b):
        raise ValueError(f"a rank correlation needs pairs: {len(a)} values against {len(b)}")
    nan = float("nan")
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return RankCorrelation(nan, nan, nan, len(a), confidence)

    def rho(x, y) -> float:
        return stats.spearmanr(x, y).statistic

    with warnings.catch_warnings():  # a resample may be constant: its rho is NaN and left out
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        values = np.array(
            [
                rho(np.take(a, i), np.take(b, i))
                for i in np.random.default_rng(seed).integers(0, len(a), (resamples, len(a)))
            ]
        )
    values = values[~np.isnan(values)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (nan, nan)
    return RankCorrelation(float(rho(a, b)), float(low), float(high), len(a), confidence)


def _sign(correlation: RankCorrelation) -> int:
    """+1 when the interval lies above 0, -1 when below, 0 when it includes 0 (or is undefined)."""
    return 1 if correlation.low > 0 else -1 if correlation.high < 0 else 0


def correlation_words(
    points: Mapping[str, tuple[float, float]], measures: str, head: str, correlation: RankCorrelation | None = None
) -> str:
    """One sentence: the rank correlation of ``points`` (label -> (alignment, robust accuracy)), named
    by ``measures``, with its bootstrap interval and whether the interval tells it from none
    (``correlation``: the one already computed for these points)."""
    correlation = correlation or rank_correlation(*zip(*points.values()))
    if math.isnan(correlation.rho):
        return f"{head}, one of the two measures is constant, so they have no rank correlation."
    reading = {
        1: "the interval excludes 0: the better aligned runs are the more robust ones.",
        -1: "the interval excludes 0, with the sign reversed: the better aligned runs are the less robust ones.",
        0: f"the interval includes 0: {len(points)} configurations cannot tell this correlation from none.",
    }[_sign(correlation)]
    return f"{head}, the Spearman rank correlation between {measures} is {correlation}; {reading}"


def seed_means(
    points: Mapping[str, tuple[float, float]], configurations: Mapping[str, str]
) -> dict[str, tuple[float, float]]:
    """One point per training configuration, the mean of its runs' points, named by its first run's label
    (``configurations`` maps a label to its run's :attr:`~pagcore.store.runs.Run.configuration`; a label
    without one stands alone). Seeds of one recipe are not independent evidence of a trend across
    recipes, and a bootstrap that resampled them as if they were would narrow the interval."""
    grouped: dict[str, list[str]] = {}
    for label in points:
        grouped.setdefault(configurations.get(label, label), []).append(label)
    return {
        labels[0]: (statistics.fmean(points[x][0] for x in labels), statistics.fmean(points[x][1] for x in labels))
        for labels in grouped.values()
    }


def configurations_words(configurations: int, runs: int) -> str:
    """How many points a correlation has and how many runs they average, e.g. '14 training configurations
    (19 runs, the seeds of a configuration averaged into one point)'."""
    head = f"{configurations} training configuration{'s' if configurations != 1 else ''}"
    return (
        head
        if configurations == runs
        else f"{head} ({runs} runs, the seeds of a configuration averaged into one point)"
    )


def alignment_claim(
    points: Mapping[str, tuple[float, float]],
    measures: str,
    head: str,
    built_in: Collection[str] = (),
    excluded: Callable[[int], str] = lambda n: f"{n} configurations",
    kinds: Mapping[str, str] | None = None,
) -> str:
    """The later paper's "better alignment, more robustness" read from ``points``; then read again
    without the ``built_in`` runs (described by ``excluded(count)``), which align with the reference
    by construction: the claim must survive without them to say more than that training towards a
    reference aligns a model with it, and hold with them to say that the whole store bears it out. Where
    only one of the two readings finds the trend, a last sentence says which. With ``kinds`` (label ->
    how its configuration was trained), the second reading says what its configurations are."""
    overall = rank_correlation(*zip(*points.values()))
    sentence = correlation_words(points, measures, head, overall)
    independent = {label: point for label, point in points.items() if label not in built_in}
    left = len(points) - len(independent)
    if not left:
        return sentence
    lead = f"Without the {excluded(left)}"
    if len(independent) < 3:
        few = f"{len(independent)} configuration{' is' if len(independent) == 1 else 's are'}"
        return f"{sentence} {lead}, {few} too few for a rank correlation."
    rest = rank_correlation(*zip(*independent.values()))
    # The reader must see what the points left are: a trend carried by two kinds of training is not
    # one carried by the PAG runs.
    counts = Counter(kinds[label] for label in independent) if kinds else Counter()
    mix = f" ({listed([f'{n} {kind}' for kind, n in counts.most_common()])})" if counts else ""
    sentence += " " + correlation_words(
        independent, measures, f"{lead}, over {len(independent)} configurations{mix}", rest
    )
    with_them, without = _sign(overall), _sign(rest)
    if without == 1 and with_them != 1:
        sentence += (
            " The claim counts only where both readings find it, since the runs set apart have aligned gradients "
            "too, however they got them. Only the reading without them finds the better aligned runs the more "
            "robust, so these runs as a whole do not show that better alignment goes with more robustness."
        )
    elif with_them == 1 and without == -1:
        sentence += (
            " Without the runs set apart the correlation is reversed: the trend rests on runs that align with the "
            "reference by construction, and the others go against it."
        )
    elif with_them == 1 and without == 0:
        sentence += (
            " Only the reading with the runs set apart finds the trend: it rests on runs that align with the "
            "reference by construction, and says nothing about the others."
        )
    return sentence
