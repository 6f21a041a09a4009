"""The gradient-masking chapter's tables, figures and conclusion, from the stored evaluations of
every run (``python -m pagcore evaluate --attacks ... --checklist --pag-score``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pagcore.base.validation import ConfigError
from pagcore.book.evidence import (
    ATTACK_WORDS,
    CHECK_WORDS,
    THREAT_METRICS,
    AlignmentSpread,
    aligned_above,
    alignment_claim,
    alignment_spread,
    configurations_words,
    failed_checks,
    judged_by_current_references,
    seed_means,
    spread_words,
    unread_failures,
)
from pagcore.book.text import NORM_WORDS, listed, markdown_table, percent, verb
from pagcore.config import TrainConfig, teacher_threat
from pagcore.data import SPECS
from pagcore.evaluate.final import PAPER_PGD_EPS, STANDARD_EPS
from pagcore.evaluate.stored import chosen_evaluations
from pagcore.store.runs import Run, RunStore

NOTHING = "not run"
CHECKS = tuple(CHECK_WORDS)
"""The checklist's checks in the order the chapter lists them."""

SOURCE_WORDS = {
    "one_image": "one image",
    "class_mean": "class mean",
    "nearest_neighbor": "nearest neighbour",
    "score": "score-based",
}


ARCHITECTURE_TITLES = {"resnet18": "ResNet-18", "vit": "ViT"}


def run_label(run: Run) -> str:
    """A run as a reader names it: dataset, method (with the λ or k in which a PAG run differs from its
    results-table row) and scale (and the seed when it is not 0)."""
    p = run.params
    if p["objective"] == "cross_entropy":
        what = "vanilla"
    elif p["objective"] == "adversarial":
        what = f"adversarial {NORM_WORDS[p['adversary']['threat']]}"
        if p.get("lam"):
            what += f" + PAG ({SOURCE_WORDS.get(p['source'], p['source'])}, λ = {p['lam']:g})"
    elif p["objective"] == "gaussian_noise":
        what = f"Gaussian noise σ = {p['noise_sigma']:g}"
    elif p["source"] == "rigd":
        what = f"RIGD {NORM_WORDS.get(teacher_threat(p['teacher']) or '', '')}".strip()
    else:
        what = SOURCE_WORDS.get(p["source"], p["source"])
    if p["objective"] == "pag":
        what += _variant(p)
    if p.get("architecture", "resnet18") != "resnet18":  # the ResNet-18 is the book's default: left unnamed
        what = f"{ARCHITECTURE_TITLES.get(p['architecture'], p['architecture'])} {what}"
    seed = f", seed {p['seed']}" if p.get("seed") else ""
    return f"{SPECS[p['dataset']].title} {what} ({p['scale']}{seed})"


def _variant(p: Mapping[str, Any]) -> str:
    """The knobs in which a PAG run differs from its results-table row (", λ = 1", ", k = 5" for the λ
    grid and the k study); empty for the row's own run."""
    try:
        row = TrainConfig.from_identity({k: v for k, v in p.items() if k not in VARIANT_KNOBS}).resolve().identity()
    except (ConfigError, KeyError, TypeError):
        return ""  # parameters no configuration resolves: the label stays the row's
    words = [f"{VARIANT_KNOBS[key]} = {p[key]:g}" for key in VARIANT_KNOBS if p.get(key, row.get(key)) != row.get(key)]
    return "".join(f", {word}" for word in words)


VARIANT_KNOBS = {"lam": "λ", "classes_per_image": "k"}
"""The knobs of the λ grid and the k study, by which runs of one row differ."""


def evaluated_runs(runs: list[Run]) -> dict[str, tuple[Run, dict]]:
    """Every run with at least one stored evaluation, by label, with its chosen evaluations. Two runs
    that a label cannot tell apart (another schedule, say) are both kept, the later one named."""
    found = {}
    for run in runs:
        entries = chosen_evaluations(run)
        if entries:
            label = run_label(run)
            found[label if label not in found else f"{label} [{run.name}]"] = (run, entries)
    return found


def _accuracy(entries: Mapping, name: str, norm: str, key: str = "robust") -> str:
    entry = entries.get((name, norm))
    return percent(entry["results"][key]) if entry else NOTHING


def attacks_table(evaluated: Mapping[str, tuple[Run, dict]], norm: str) -> str:
    """Markdown, one threat model: clean accuracy and robust accuracy under PGD-20, PGD-100×5 and
    AutoAttack, all on the run's seeded subset, whose size is the second column; in ℓ2 also PGD-20
    started inside the ball, beside the paper's start outside it."""
    attacks = ("pgd20", "pgd20_ball", "pgd100", "autoattack") if norm == "l2" else ("pgd20", "pgd100", "autoattack")
    rows = []
    for label, (_, entries) in evaluated.items():
        measured = [entries[(attack, norm)] for attack in attacks if (attack, norm) in entries]
        if not measured:
            continue
        size = measured[0]["settings"]["subset"]["size"]
        clean = next((percent(e["results"]["clean"]) for e in measured if "clean" in e["results"]), NOTHING)
        rows.append((label, f"{size:,}", clean, *(_accuracy(entries, attack, norm) for attack in attacks)))
    if not rows:
        rows.append(("no evaluated run", "", *(NOTHING for _ in range(len(attacks) + 1))))
    return markdown_table(("run", "images", "clean", *(ATTACK_WORDS[a] for a in attacks)), rows)


def start_sentence(evaluated: Mapping[str, tuple[Run, dict]]) -> str:
    """How far ℓ2 PGD-20 started inside the ball lands from the paper's start (outside it), over the runs
    with both on the same images."""
    gaps = []
    for _, entries in evaluated.values():
        ball, paper = entries.get(("pgd20_ball", "l2")), entries.get(("pgd20", "l2"))
        if ball and paper and ball["settings"]["subset"] == paper["settings"]["subset"]:
            gaps.append(ball["results"]["robust"] - paper["results"]["robust"])
    if not gaps:
        return "No run has both starts of ℓ2 PGD-20 on the same images yet."
    largest, runs = max(gaps, key=abs), f"{len(gaps)} run{'s' if len(gaps) != 1 else ''}"
    return (
        f"On the {runs} with both starts on the same images, PGD-20 started "
        f"inside the ball leaves an accuracy within {100 * abs(largest):.1f} points of the paper's start (mean "
        f"difference {100 * sum(gaps) / len(gaps):+.2f} points, in-ball minus paper): where the attack starts does "
        "not change the ℓ2 numbers here."
        if abs(largest) <= 0.01
        else f"On the {runs} with both starts on the same images, the in-ball start moves PGD-20's ℓ2 "
        f"accuracy by up to {100 * largest:+.1f} points from the paper's start (in-ball minus paper)."
    )


def checks_table(evaluated: Mapping[str, tuple[Run, dict]], norm: str) -> str:
    """Markdown, one threat model: each check's outcome per run (pass, FAIL or not run)."""
    verdict = {True: "pass", False: "FAIL", None: NOTHING}
    rows = []
    for label, (_, entries) in evaluated.items():
        entry = entries.get(("checks", norm))
        if entry is None:
            continue
        unread = unread_failures(entry)
        outcomes = {
            c["name"]: "not read" if c["passed"] is False and c["name"] in unread else verdict[c["passed"]]
            for c in entry["results"]["checks"]
        }
        rows.append((label, *(outcomes.get(check, NOTHING) for check in CHECKS)))
    if not rows:
        rows.append(("no evaluated run", *[NOTHING] * len(CHECKS)))
    return markdown_table(("run", *(CHECK_WORDS[c] for c in CHECKS)), rows)


def pag_scores(evaluated: Mapping[str, tuple[Run, dict]]) -> dict[str, dict[str, Any]]:
    """Per run with a PAG score: its gradient alignment, targeted confidence, reference and whole-test-set
    PGD-20 ℓ2 accuracy."""
    scores = {}
    for label, (run, entries) in evaluated.items():
        entry = entries.get(("pag_score", "all"))
        if entry is None:
            continue
        scores[label] = {
            "alignment": entry["results"]["gradient_alignment"]["score"],
            "confidence": entry["results"]["targeted_confidence"]["score"],
            "reference": entry["settings"]["reference"],
            "robust_l2": run.metrics["l2"],
            "dataset": run.params["dataset"],
            "objective": run.params["objective"],
            "scale": run.params["scale"],
            "seed": run.params.get("seed", 0),
            "configuration": run.configuration,
            "source": run.params.get("source"),
            "lam": run.params.get("lam", 0),
            # Trained towards an adversarially trained model's gradients (RIGD) or adversarially trained itself:
            # such runs align with the reference partly by construction.
            "built_in": run.params.get("source") == "rigd" or run.params["objective"] == "adversarial",
        }
    return scores


def seed_scores(runs: Sequence[Run]) -> dict[str, list[float]]:
    """The gradient alignment of every run with a PAG score, grouped into runs that differ in their seed
    alone and were scored against one reference on one image subset, one score per seed (for
    :func:`~pagcore.book.evidence.alignment_spread`). Each group is named by its configuration's label
    without the seed; two configurations a label cannot tell apart are named by a run as well."""
    groups: dict[tuple[str, str, str], dict[int, tuple[Run, float]]] = {}
    for run in runs:
        entry = chosen_evaluations(run).get(("pag_score", "all"))
        if entry is None:
            continue
        settings = entry["settings"]
        key = (run.configuration, settings["reference"], settings["subset"].get("indices_sha256", ""))
        score = entry["results"]["gradient_alignment"]["score"]
        groups.setdefault(key, {}).setdefault(run.params.get("seed", 0), (run, score))
    named: dict[str, list[float]] = {}
    for by_seed in groups.values():
        first = by_seed[min(by_seed)][0]
        label = run_label(first).replace(f", seed {min(by_seed)})", ")")
        named[label if label not in named else f"{label} [{first.name}]"] = [score for _, score in by_seed.values()]
    return named


def measured_alignment_spread(runs_dir: str = "", kind: str = "real") -> AlignmentSpread | None:
    """The PAG score's seed spread, the widest over every configuration of the store (any dataset and
    scale) scored with enough seeds: one margin for every comparison of two scores in the book."""
    scored = [run for run in RunStore(runs_dir or None).runs() if run.kind == kind and run.complete]
    return alignment_spread(seed_scores(scored))


def _vanilla_score(scores: Mapping[str, dict[str, Any]], run: Run) -> dict[str, Any] | None:
    """The PAG score of the vanilla run that ``run`` is compared with: same dataset and scale, the same
    seed where there is one, else any."""
    p = run.params
    alike = [
        s
        for s in scores.values()
        if s["objective"] == "cross_entropy" and s["dataset"] == p["dataset"] and s["scale"] == p["scale"]
    ]
    return next((s for s in alike if s["seed"] == p.get("seed", 0)), alike[0] if alike else None)


def pag_table(scores: Mapping[str, dict[str, Any]], evaluated: Mapping[str, tuple[Run, dict]]) -> str:
    """Markdown: each run's PAG score beside its PGD-20 ℓ2 accuracy; the reference is named as a run."""
    labels = {run.name: label for label, (run, _) in evaluated.items()}
    rows = [
        (
            label,
            f"{s['alignment']:.2f}",
            percent(s["confidence"]),
            labels.get(s["reference"], s["reference"]),
            percent(s["robust_l2"]),
        )
        for label, s in scores.items()
    ]
    if not rows:
        rows.append(("no evaluated run", NOTHING, NOTHING, "", NOTHING))
    return markdown_table(("run", "alignment", "confidence", "reference", "PGD-20 ℓ2"), rows)


def _radius_checks(evaluated: Mapping[str, tuple[Run, dict]], norm: str) -> dict[str, tuple[float, dict]]:
    """Each checked run's standard radius and stored check 1 (accuracy against a growing radius) under
    ``norm``; runs without a checklist are left out."""
    checks = {}
    for label, (_, entries) in evaluated.items():
        entry = entries.get(("checks", norm))
        if entry is not None:
            check = next(c for c in entry["results"]["checks"] if c["name"] == "eps_monotone")
            checks[label] = (entry["settings"]["eps"], check)
    return checks


def radius_panels(evaluated: Mapping[str, tuple[Run, dict]]) -> dict[str, dict[str, tuple[list, list]]]:
    """For :func:`pagcore.book.figures.accuracy_vs_radius`: one panel per dataset and threat model (a
    dataset's panels side by side), each run's accuracy under PGD-20 keeping each image's strongest iterate
    against the radius
    in multiples of the standard one. The panel's title names the dataset, so the labels leave it out
    and a method keeps one style on both datasets."""
    datasets = dict.fromkeys(
        run.params["dataset"]
        for run, entries in evaluated.values()
        if any(("checks", n) in entries for n in THREAT_METRICS)
    )
    if not datasets:  # the threat models' panels, empty
        return {NORM_WORDS[norm]: {} for norm in THREAT_METRICS}
    panels = {}
    for dataset in datasets:
        title = SPECS[dataset].title
        ours = {label: pair for label, pair in evaluated.items() if pair[0].params["dataset"] == dataset}
        for norm in THREAT_METRICS:
            panels[f"{title}, {NORM_WORDS[norm]}"] = {
                label.removeprefix(f"{title} "): (
                    [e / eps for e in check["numbers"]["eps"]],
                    list(check["numbers"]["accuracy"]),
                )
                for label, (eps, check) in _radius_checks(ours, norm).items()
            }
    return panels


def radius_reading(evaluated: Mapping[str, tuple[Run, dict]]) -> str:
    """What the accuracy-against-radius figure shows, per threat model: which curves rise as the radius
    grows by more than check 1 allows (its stored verdict), and what the largest radius leaves of the
    most robust run."""
    parts = []
    for norm in THREAT_METRICS:
        curves = _radius_checks(evaluated, norm)
        if not curves:
            continue
        rising = [label for label, (_, check) in curves.items() if not check["passed"]]
        largest = max(check["numbers"]["eps"][-1] / eps for eps, check in curves.values())
        last = {
            label: check["numbers"]["accuracy"][-1]
            for label, (eps, check) in curves.items()
            if check["numbers"]["eps"][-1] / eps == largest
        }
        top = max(last, key=last.get)
        trend = (
            f"{listed(rising)} {verb(len(rising), 'rise')} by more than check 1 allows as the radius grows"
            if rising
            else f"none of the {len(curves)} curves rises by more than check 1 allows as the radius grows"
        )
        reached = (
            f"every curve is at {percent(0.0)}"
            if percent(last[top]) == percent(0.0)
            else f"the highest is {top} at {percent(last[top])}"
        )
        parts.append(f"under {NORM_WORDS[norm]}, {trend}, and at {largest:g}× the radius {reached}")
    if not parts:
        return "No run has a checklist stored yet, so the figure is empty."
    return "In the figure, " + "; ".join(parts) + "."


def scatter_groups(scores: Mapping[str, dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """For :func:`pagcore.book.figures.alignment_scatter`: (alignment, PGD-20 ℓ2 accuracy) per run,
    grouped by dataset (each dataset's runs are scored against a reference of that dataset), the runs
    aligned with their reference by construction apart, since the correlation's second reading sets
    them aside."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for s in scores.values():
        title = SPECS[s["dataset"]].title
        label = f"{title}, adversarially trained or RIGD" if s.get("built_in") else title
        groups.setdefault(label, []).append((s["alignment"], s["robust_l2"]))
    return groups


def shared_reference(scores: Mapping[str, dict[str, Any]]) -> str | None:
    """The reference most of ``scores`` were measured against (scores against different references do
    not compare, so a comparison across runs uses only this one's); None without scores."""
    references = [s["reference"] for s in scores.values()]
    return max(references, key=references.count, default=None)


TRAINING_KINDS = {
    "cross_entropy": "vanilla",
    "pag": "PAG",
    "adversarial": "adversarial training",
    "gaussian_noise": "Gaussian noise",
}
TRAINING_GLOSSES = {"PAG": "no adversarial examples", "RIGD": "adversarially trained teacher's gradients"}
"""What the alignment figure's legend adds to a kind's name, for a reader who meets it there first."""


def training_kind(scored: Mapping[str, Any]) -> str:
    """How a scored model was trained, in a word or two: the runs the claim's second reading sets apart
    (RIGD, adversarial training with or without the PAG term) each under a name of their own, so a
    reader can see which points that reading leaves out."""
    if scored.get("source") == "rigd":
        return "RIGD"
    if scored["objective"] == "adversarial" and scored.get("lam"):
        return "adversarial training + PAG"
    return TRAINING_KINDS.get(scored["objective"], scored["objective"])


def training_words(scored: Mapping[str, Any]) -> str:
    """:func:`training_kind` as the alignment figure's legend names it, with its gloss."""
    kind = training_kind(scored)
    return f"{kind} ({TRAINING_GLOSSES[kind]})" if kind in TRAINING_GLOSSES else kind


def correlation_sentence(scores: Mapping[str, dict[str, Any]]) -> str:
    """The rank correlation of alignment and robustness over the runs that share the commonest
    reference, with its bootstrap interval, and whether the interval tells it from none; then the same
    without the runs that align with the reference partly by construction (adversarially trained, or
    distilled from an adversarially trained teacher), which the claim must survive to mean much."""
    reference = shared_reference(scores)
    shared = {label: s for label, s in scores.items() if s["reference"] == reference}
    if len(shared) < 3:
        return "Fewer than three runs have a PAG score against a common reference, so there is no correlation yet."
    points = seed_means(
        {label: (s["alignment"], s["robust_l2"]) for label, s in shared.items()},
        {label: s["configuration"] for label, s in shared.items()},
    )
    return alignment_claim(
        points,
        "gradient alignment and PGD-20 ℓ2 accuracy",
        f"Across the {configurations_words(len(points), len(shared))} scored against the same reference",
        [label for label in points if shared[label].get("built_in")],
        lambda n: (
            f"{'one' if n == 1 else n} adversarially trained or RIGD configuration{'s' if n != 1 else ''}, which "
            f"{verb(n, 'align')} with an adversarially trained model by construction"
        ),
        {label: training_kind(shared[label]) for label in points},
    )


def conclusion(
    evaluated: Mapping[str, tuple[Run, dict]], scores: Mapping[str, dict[str, Any]], spread: AlignmentSpread | None
) -> str:
    """What the chapter shows, in a few sentences computed from the evaluations: which PAG-trained runs
    pass every check, which fail which, and whether those that fail align their gradients better than
    the vanilla run of their dataset beyond the PAG score's seed ``spread``."""
    if not evaluated:
        return "No run has been evaluated yet, so this chapter cannot conclude."
    passing, failing, unchecked, again = [], [], [], []
    for label, (run, entries) in evaluated.items():
        if run.params["objective"] != "pag":
            continue
        failed = failed_checks(entries)
        if failed is None:
            checked = all(("checks", norm) in entries for norm in THREAT_METRICS)
            (again if checked else unchecked).append(label)
        elif failed:
            failing.append((label, run, failed))
        else:
            passing.append(label)
    parts = []
    if passing:
        parts.append(f"Every check passes for {listed(passing)}: no sign of gradient masking was found.")
    unaligned = []
    for label, run, failed in failing:
        words = ", ".join(CHECK_WORDS.get(c, c) for c in failed)
        sentence = f"{label} fails the {words} check"
        vanilla = _vanilla_score(scores, run)
        own = scores.get(label)
        if own is not None and vanilla is not None and own["reference"] == vanilla["reference"]:
            better = aligned_above(spread, own["alignment"], vanilla["alignment"])
            sentence += (
                f"; its gradient alignment ({own['alignment']:.2f}) is "
                + ("above" if better else "not shown to be above")
                + f" vanilla's ({vanilla['alignment']:.2f}), its targeted confidence {percent(own['confidence'])} "
                f"against {percent(vanilla['confidence'])}"
            )
            if not better:
                unaligned.append(label)
        parts.append(sentence + ".")
    if unaligned:
        parts.append(
            f"Whatever the PGD numbers of {listed(unaligned)} show, they do not come with gradients shown to be "
            f"better aligned ({spread_words(spread)})."
        )
    if again:
        parts.append(
            f"The checklist must be run again with its current attacks on {listed(again)}: "
            f"{'its stored one fails' if len(again) == 1 else 'their stored ones fail'} only a check whose "
            "reference has changed since."
        )
    if unchecked:
        named = f": {listed(unchecked)}" if len(unchecked) <= 4 else ", all named in the tables below"
        one = len(unchecked) == 1
        parts.append(
            f"It has not been run on {len(unchecked)} {'other ' if passing or failing or again else ''}"
            f"PAG-trained run{'' if one else 's'}{named}."
        )
    return " ".join(parts) or "No PAG-trained run has been evaluated yet."


def radius_difference() -> str:
    """How far AutoAttack's radii (RobustBench's) lie from the paper's PGD radii, in words."""
    parts = []
    for norm in THREAT_METRICS:
        standard, paper = {STANDARD_EPS[d][norm] for d in STANDARD_EPS}, {PAPER_PGD_EPS[d][norm] for d in STANDARD_EPS}
        if standard == paper:
            parts.append(f"in {NORM_WORDS[norm]} they are equal")
        else:
            (a,), (b,) = standard, paper  # one radius per norm across datasets, as in both conventions
            parts.append(f"in {NORM_WORDS[norm]} {a:.4f} against the paper's {b:g}, {100 * (a / b - 1):.1f} % larger")
    return "; ".join(parts)


def loss_gap_sentence(evaluated: Mapping[str, tuple[Run, dict]]) -> str:
    """What AutoAttack finds beyond PGD-20 on the adversarially trained runs, in their own threat model
    and on the same images: the size of gap that check 3 must not read as masking."""
    gaps = []
    for label, (run, entries) in evaluated.items():
        p = run.params
        if p["objective"] != "adversarial" or p.get("lam"):
            continue
        norm = p["adversary"]["threat"]
        pgd, autoattack = entries.get(("pgd20", norm)), entries.get(("autoattack", norm))
        if pgd is None or autoattack is None or pgd["settings"]["subset"] != autoattack["settings"]["subset"]:
            continue
        if autoattack["results"]["robust"] < pgd["results"]["robust"]:
            pgd_words, autoattack_words = percent(pgd["results"]["robust"]), percent(autoattack["results"]["robust"])
            gaps.append(
                f"{label} keeps {pgd_words} under PGD-20 and {autoattack_words} under AutoAttack "
                f"({NORM_WORDS[norm]}, {pgd['settings']['subset']['size']:,} images)"
            )
    if not gaps:
        return "No adversarially trained run shows AutoAttack finding more than PGD-20 on the same images."
    return (
        "AutoAttack finds more than PGD-20 on adversarially trained models as well, each pair of numbers on one "
        "seeded subset of the test set (not the whole-test-set numbers of the results table): "
        f"{'; '.join(gaps)}. The "
        f"radii differ by too little to explain that ({radius_difference()}): PGD-20 overstates these models' "
        "robustness too, and AutoAttack is the number to trust. Adversarially trained models are the accepted "
        "baseline of a sound evaluation, so a gap of that size is no evidence of masking by itself: check 3 "
        "compares PGD-20 only with more of itself, and the AutoAttack columns below carry the stronger attack."
    )


def strong_attack_sentence(evaluated: Mapping[str, tuple[Run, dict]]) -> str:
    """Which stored checklists were judged against the checks' current references, and which against
    older ones (whose changed checks' failures are not read, see :func:`unread_failures`)."""
    current, older = [], []
    for label, (_, entries) in evaluated.items():
        for norm in THREAT_METRICS:
            entry = entries.get(("checks", norm))
            if entry is not None:
                (current if judged_by_current_references(entry) else older).append(f"{label} {NORM_WORDS[norm]}")
    if not current and not older:
        return "No checklist is stored yet."
    total = len(current) + len(older)
    if not older:
        stored = "The one stored checklist was" if total == 1 else f"All {total} stored checklists were"
        return f"{stored} judged against the checks' current references."
    sentence = (
        f"{len(older)} of the {total} stored checklists use other references than the current checks: PGD-100×5 "
        "alone as the strongest white-box attack, or check 3 against targeted APGD. Their passes stand, since the "
        "current references can only make a check easier to pass; a failure may vanish under them, so the tables "
        "mark it 'not read' and the rule of evidence counts it as a checklist to run again"
    )
    return sentence + (f" ({listed(older)})." if len(older) <= 4 else ".")
