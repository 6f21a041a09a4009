"""The chapter on the latest version's claims, from the stored runs: PAG-boosted adversarial training
(adversarial training with and without the PAG term, over seeds), the effect beyond ResNet-18 (the ViT's
rows judged by the rule of evidence against the ViT's vanilla) and better alignment, more robustness.

The boost claimed is a few points, so it is judged on means over seeds: a gain counts
only beyond :data:`pagcore.book.evidence.SIGNIFICANCE` standard errors of the difference of the two
means, and only with :data:`pagcore.book.evidence.OWN_SPREAD_SEEDS` seeds on each side.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pagcore.base.validation import ConfigError, check_choice
from pagcore.book import masking, score
from pagcore.book.evidence import (
    BASELINE,
    OWN_SPREAD_SEEDS,
    THREAT_METRICS,
    Judgement,
    Measured,
    Noise,
    mean_difference,
    sampling_std,
    seed_noise,
    side,
    threat_words,
)
from pagcore.book.text import METRIC_COLUMNS, NORM_WORDS, listed, markdown_table, percent, placeholder_table
from pagcore.book.verdicts import judge_table
from pagcore.config import VIT_DEPTH, VIT_WIDTH, preset_for
from pagcore.data import SPECS
from pagcore.evaluate.stored import chosen_evaluations
from pagcore.orchestrate.book_runs import (
    ARCHITECTURE_PAG_ROWS,
    ARCHITECTURE_ROWS,
    SEEDS,
    architecture_overrides,
    row_overrides,
)
from pagcore.orchestrate.evaluations import evaluate_command
from pagcore.orchestrate.experiments import BOOST_LAMBDAS, BOOST_THREATS, ROW_LABELS, ROWS, boost_row
from pagcore.orchestrate.queue import chapter_runs
from pagcore.store.runs import Run, RunStore

TRAININGS: dict[str, str | None] = {
    "adversarial": None,
    **{f"adversarial + PAG ({masking.SOURCE_WORDS[source]})": source for source in BOOST_LAMBDAS},
}
"""The arms of the comparison, in the order the tables list them: adversarial training, and the same with
the PAG term of each source of targets (by label -> the source, None for none)."""
WITHOUT = next(iter(TRAININGS))


def trainings(sources: Sequence[str] = tuple(BOOST_LAMBDAS)) -> dict[str, str | None]:
    """The arms of :data:`TRAININGS` a chapter shows: adversarial training and the PAG term of each of
    ``sources``, each checked against :data:`~pagcore.orchestrate.experiments.BOOST_LAMBDAS`."""
    if not sources:
        raise ConfigError(f"boost_sources must name at least one of {', '.join(BOOST_LAMBDAS)}")
    for source in sources:
        check_choice("boost_sources", source, tuple(BOOST_LAMBDAS))
    return {training: source for training, source in TRAININGS.items() if source is None or source in sources}


def boost_points(
    seeds: Sequence[int] = SEEDS, sources: Sequence[str] = tuple(BOOST_LAMBDAS)
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The chapter's runs as (row, overrides) by label: per threat model, each arm of ``sources`` with
    each seed."""
    points = {}
    for threat in BOOST_THREATS:
        for training, source in trainings(sources).items():
            row = boost_row(threat, source)
            for seed in seeds:
                points[label(threat, training, seed)] = (row, {**row_overrides("cifar10", row), "seed": seed})
    return points


def boost_setting(sources: Sequence[str] = tuple(BOOST_LAMBDAS)) -> str:
    """The PAG term of each arm of ``sources`` in words: its targets, their option and λ."""
    arms = [
        f"{masking.SOURCE_WORDS[s]} targets (`{s}`, λ = {BOOST_LAMBDAS[s]:g})" for s in trainings(sources).values() if s
    ]
    return f"The PAG term uses {' or '.join(arms)}."


def boost_evaluate_commands(
    points: Mapping[str, tuple[str, dict[str, Any]]], scale: str, data: str, knobs: Mapping[str, Any] | None = None
) -> list[str]:
    """The commands that store the book's evaluations of every run of ``points`` (from
    :func:`boost_points`, with the chapter's shared training ``knobs``), the attacks and the checklist
    only in the threat model the run was trained for: the comparison reads AutoAttack in no other, and
    the other would double the time."""
    return [
        evaluate_command("cifar10", row, overrides, scale, data, [ROWS[row].knobs["threat"]], knobs)
        for row, overrides in points.values()
    ]


def label(threat: str, training: str, seed: int) -> str:
    return f"{training} {NORM_WORDS[threat]}, seed {seed}"


def arms(
    runs: Mapping[str, Run | None], seeds: Sequence[int], sources: Sequence[str] = tuple(BOOST_LAMBDAS)
) -> dict[str, dict[str, list[Run]]]:
    """threat -> training (the arms of ``sources``) -> its complete runs, in seed order."""
    return {
        threat: {
            training: [run for s in seeds if (run := runs.get(label(threat, training, s))) is not None]
            for training in trainings(sources)
        }
        for threat in BOOST_THREATS
    }


def _autoattack_entry(run: Run, threat: str) -> dict[str, Any] | None:
    return chosen_evaluations(run).get(("autoattack", threat))


def autoattack(run: Run, threat: str) -> float | None:
    """The run's stored AutoAttack accuracy in ``threat`` (on its seeded subset), if any."""
    entry = _autoattack_entry(run, threat)
    return entry["results"]["robust"] if entry else None


def _values(runs: Sequence[Run], threat: str, metric: str) -> list[float]:
    return [m.value for m in _measured(runs, threat, metric)]


def _measured(runs: Sequence[Run], threat: str, metric: str) -> list[Measured]:
    """Each run's ``metric`` with the test images behind it: AutoAttack in ``threat`` on the run's seeded
    subset (none unless every run has it), else the whole-test-set number."""
    if metric == "autoattack":
        entries = [_autoattack_entry(run, threat) for run in runs]
        if not all(entries):
            return []
        return [Measured.attacked(e) for e in entries]
    return [Measured.of(run.metrics, metric) for run in runs]


def _mean_spread(values: Sequence[float]) -> str:
    if not values:
        return "not run"
    if len(values) == 1:
        return percent(values[0])
    return percent(statistics.fmean(values), statistics.stdev(values))


def boost_table(by_threat: Mapping[str, Mapping[str, list[Run]]]) -> str:
    """Markdown: per threat model and arm, the seeds stored and the mean ± standard deviation over
    them of clean and PGD-20 accuracy (whole test set) and AutoAttack in the arm's own threat model
    (on each run's seeded subset; shown only when every seed has it)."""
    header = ("threat model", "training", "seeds", "clean", "PGD-20 ℓ∞", "PGD-20 ℓ2", "AutoAttack, own threat")
    rows = [
        (
            NORM_WORDS[threat],
            training,
            len(runs),
            *(_mean_spread(_values(runs, threat, key)) for key, _ in METRIC_COLUMNS),
            _mean_spread(_values(runs, threat, "autoattack")),
        )
        for threat, by_training in by_threat.items()
        for training, runs in by_training.items()
    ]
    return markdown_table(header, rows) if rows else placeholder_table(header, "no threat model chosen")


def boost_runs_table(by_threat: Mapping[str, Mapping[str, list[Run]]]) -> str:
    """Markdown: every stored run of the comparison on its own line, so that each seed behind a mean of
    :func:`boost_table` can be read: clean and PGD-20 accuracy on the whole test set, and AutoAttack in
    the training's own threat model on the run's seeded subset."""
    header = ("threat model", "training", "seed", "clean", "PGD-20 ℓ∞", "PGD-20 ℓ2", "AutoAttack, own threat")
    rows = [
        (
            NORM_WORDS[threat],
            training,
            run.params["seed"],
            *(percent(run.metrics[key]) for key, _ in METRIC_COLUMNS),
            percent(attacked) if (attacked := autoattack(run, threat)) is not None else "not run",
        )
        for threat, by_training in by_threat.items()
        for training, runs in by_training.items()
        for run in runs
    ]
    return markdown_table(header, rows) if rows else placeholder_table(header, "no run stored yet")


def gain(without: Sequence[Measured], with_pag: Sequence[Measured]) -> tuple[float, float] | None:
    """The gain of the PAG term (mean with it minus mean without, over seeds) and the standard error
    of that difference, which combines, as the rule of evidence does, each side's spread over seeds
    with the sampling error of its test images; None without :data:`OWN_SPREAD_SEEDS` seeds a side."""
    if min(len(without), len(with_pag)) < OWN_SPREAD_SEEDS:
        return None
    difference, seeds_error = mean_difference([m.value for m in without], [m.value for m in with_pag])
    # Every seed of an arm is attacked on the same seeded subset, so the subset's sampling error does not
    # shrink with the number of seeds: each mean carries one image count's worth of it.
    sampling = (
        sampling_std(statistics.fmean(m.value for m in side), min(m.images for m in side))
        for side in (without, with_pag)
    )
    return difference, math.hypot(seeds_error, *sampling)


def gain_words(name: str, measured: tuple[float, float]) -> str:
    difference, error = measured
    judged = {1: "a gain beyond the noise", -1: "a loss beyond the noise", 0: "within the noise"}[side(*measured)]
    return f"{name} {100 * difference:+.1f} ± {100 * error:.1f} points (± one standard error; {judged})"


TRUSTED_WORDS = "the trusted robust accuracy (AutoAttack where every seed of both arms has it, else PGD-20)"


def boost_verdict(by_threat: Mapping[str, Mapping[str, list[Run]]], scale: str) -> str:
    """Per threat model and source of targets, what the PAG term changes in adversarial training, judged
    on its own threat model's robust accuracy: under AutoAttack where every seed of both arms has it,
    else under PGD-20. What moves beyond the noise beside that number is said too, so that a verdict
    on the trusted number hides no loss elsewhere."""
    parts, sides, beside, pending = [], {}, [], []
    for threat, by_training in by_threat.items():
        without = by_training[WITHOUT]
        for training, with_pag in by_training.items():
            source = TRAININGS[training]
            if source is None:
                continue
            words = f"{NORM_WORDS[threat]} with {masking.SOURCE_WORDS[source]} targets (λ = {BOOST_LAMBDAS[source]:g})"
            if min(len(without), len(with_pag)) < OWN_SPREAD_SEEDS:
                pending.append(
                    f"{words}, {len(without)} of {OWN_SPREAD_SEEDS} seeds without the PAG term and {len(with_pag)} "
                    f"of {OWN_SPREAD_SEEDS} with it"
                )
                continue
            attacked = (_measured(without, threat, "autoattack"), _measured(with_pag, threat, "autoattack"))
            trusted = all(attacked)
            pgd = gain(_measured(without, threat, threat), _measured(with_pag, threat, threat))
            robust = gain(*attacked) if trusted else pgd
            clean = gain(_measured(without, threat, "clean"), _measured(with_pag, threat, "clean"))
            pgd_words = f"PGD-20 {NORM_WORDS[threat]}"
            shown = [(f"AutoAttack {NORM_WORDS[threat]}", robust)] if trusted else []
            shown += [(pgd_words, pgd), ("clean", clean)]
            parts.append(f"{words}: {', '.join(gain_words(name, m) for name, m in shown)}")
            sides[words] = side(*robust)
            others = [(pgd_words, pgd)] if trusted else []
            moved = [
                f"{'clean accuracy' if name == 'clean' else name} {'rises' if way > 0 else 'falls'}"
                for name, m in [*others, ("clean", clean)]
                if (way := side(*m))
            ]
            if moved:
                beside.append(f"in {words}, {listed(moved)} beyond the noise")
    head = (
        f"Adversarial training with and without the PAG term, CIFAR-10, {scale} scale, judged on the means over "
        f"each arm's seeds ({OWN_SPREAD_SEEDS} or more)"
    )
    if not sides:
        return (
            f"{head}: no comparison has all its seeds stored yet ({'; '.join(pending)}), so the claim that PAG "
            "boosts adversarial training is not judged yet."
        )
    by_side = {way: [words for words, s in sides.items() if s == way] for way in (1, -1, 0)}
    effects = []  # the first names the trusted number, the others refer back to it
    for change, way in (("raises", 1), ("lowers", -1), ("changes", 0)):
        if by_side[way]:
            noise = "beyond the noise" if way else "only within the noise"
            effects.append(f"{change} {'it' if effects else TRUSTED_WORDS} {noise} in {listed(by_side[way])}")
    if by_side[1]:
        supported = f"the runs support the claim in {listed(by_side[1])}"
    else:  # a "no" on part of the arms is said as such while others are still to run
        supported = f"the runs {'judged so far ' if pending else ''}do not support the claim"
    said = f"{head}: {'; '.join(parts)}. The PAG term {'; it '.join(effects)}: {supported}."
    if beside:
        said += f" Beside that number, {'; '.join(beside)}."
    if pending:  # a verdict on part of the claim says which part is still open, and how far its runs are
        said += f" Not judged yet: {'; '.join(pending)}."
    return said


def architecture_points(
    scale: str = "cpu", epochs: int | None = None, rows: Sequence[str] = ARCHITECTURE_ROWS, seeds: Sequence[int] = (0,)
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The ViT's ``rows`` with each of ``seeds`` as (row, overrides), keyed by :func:`seed_label`, so that
    seed 0's runs read as a results table; ``epochs`` (None: the scale's) is checked against the
    score-based row's λ before anything runs."""
    epochs = epochs or preset_for(scale, "cifar10").epochs
    for row in rows:
        check_choice("vit_rows", row, ARCHITECTURE_ROWS)
    return {seed_label(row, s): (row, architecture_overrides(row, epochs, s)) for row in rows for s in seeds}


def seed_label(row: str, seed: int) -> str:
    """A ViT run's key: its row for seed 0, the row and its seed for any other."""
    return row if seed == 0 else f"{row}, seed {seed}"


def first_seeds(runs: Mapping[str, Run | None], rows: Sequence[str]) -> dict[str, Run | None]:
    """Each ViT row's seed-0 run (or None), from :func:`architecture_points`' keys: the runs its table
    and verdict are made of."""
    return {row: runs.get(seed_label(row, 0)) for row in rows}


def architecture_seeds(
    runs: Mapping[str, Run | None], rows: Sequence[str], seeds: Sequence[int]
) -> dict[str, list[Run]]:
    """Each ViT row's stored runs over ``seeds``, from :func:`architecture_points`' keys."""
    return {row: [run for s in seeds if (run := runs.get(seed_label(row, s))) is not None] for row in rows}


ARCHITECTURE_WORDS = "the ViT"


def vit_words(scale: str, width: int | None = None) -> str:
    """The ViT of ``scale`` in words: its blocks and width (the scale's unless ``width`` is given)."""
    return f"a ViT of {VIT_DEPTH[scale]} blocks of width {width or VIT_WIDTH[scale]}"


def architecture_judgements(runs: Mapping[str, Run | None], noise: Noise | None) -> dict[str, Judgement]:
    """The rule applied to the ViT's PAG rows against the ViT's vanilla, with the ViT's ``noise``
    (:func:`architecture_noise`)."""
    if noise is None:
        return {}
    return judge_table(runs, noise, SPECS["cifar10"].num_classes, ARCHITECTURE_PAG_ROWS)


def architecture_noise(resnet: Noise | None, seeded: Mapping[str, Sequence[Run]]) -> Noise | None:
    """The seed spread the ViT's rows are judged with. A ViT row with
    :data:`~pagcore.book.evidence.OWN_SPREAD_SEEDS` seeds (``seeded``: row -> its runs) takes its own;
    every other takes the widest measured on either architecture, since the ResNet-18's spreads say
    nothing certain about the ViT's."""
    vit = seed_noise({row: [run.metrics for run in runs] for row, runs in seeded.items()}, ARCHITECTURE_WORDS)
    if vit is None:
        return None if resnet is None else resnet.borrowed(ARCHITECTURE_WORDS)
    if resnet is None:
        return vit
    # The ResNet-18's rows share names with the ViT's: renamed, they count towards the widest only.
    renamed = {f"ResNet-18 {row}": row for row in resnet.spreads}
    return Noise(
        spreads={**{name: resnet.spreads[row] for name, row in renamed.items()}, **vit.spreads},
        seeds={**{name: resnet.seeds[row] for name, row in renamed.items()}, **vit.seeds},
        measured_on=f"{resnet.measured_on} and {ARCHITECTURE_WORDS}",
        own=vit.own,
        alignment=resnet.alignment,
    )


def architecture_verdict(
    runs: Mapping[str, Run | None],
    judged: Mapping[str, Judgement],
    resnet: Mapping[str, Judgement],
    scale: str,
    width: int | None = None,
    noise: Noise | None = None,
    resnet_noise: Noise | None = None,
) -> str:
    """Whether the effect holds beyond ResNet-18: each ViT PAG row's verdict beside the same row's on the
    ResNet-18 (with the spread ``resnet_noise`` gave it), the ViT's seed spread ``noise``
    (:func:`architecture_noise`) they were judged with, and the answer they give: yes once a ViT row is
    evidence, no only once every PAG row is judged and none is."""
    head = f"The effect beyond ResNet-18 ({vit_words(scale, width)}, CIFAR-10, {scale} scale): "
    stored = [row for row in ARCHITECTURE_ROWS if runs.get(row) is not None]
    if not judged:
        rows = listed([ROW_LABELS[r] for r in ARCHITECTURE_ROWS])
        return head + (
            f"of its {len(ARCHITECTURE_ROWS)} rows ({rows}), {len(stored)} {'is' if len(stored) == 1 else 'are'} "
            "stored and none is judged yet (the rule needs the ViT's vanilla run, a PAG run and the measured seed "
            "spread), so the claim is not tested."
        )
    parts = []
    for row, judgement in judged.items():
        other = resnet.get(row)
        beside = ""
        if other is not None:
            # A verdict against the widest spread and one against the row's own differ in what they could
            # detect: the reader must see which is which before comparing them.
            own = resnet_noise is not None and row in resnet_noise.own
            spread = (
                ""
                if resnet_noise is None
                else f", judged with {'its own seed spread' if own else 'the widest seed spread'}"
            )
            beside = f"; on the ResNet-18: {other.verdict}{spread}"
        parts.append(f"{ROW_LABELS[row]}: **{judgement.verdict}** ({'; '.join(judgement.reasons)}{beside})")
    missing = [ROW_LABELS[row] for row in ARCHITECTURE_PAG_ROWS if row not in judged]
    if missing:
        parts.append(f"{listed(missing)} not run yet")
    # Without the spread a reader cannot tell why a gap of a few points is "within noise".
    spread = (
        ""
        if noise is None
        else noise.rule_words({row: f"the ViT's {ROW_LABELS[row]}" for row in ARCHITECTURE_ROWS}, ARCHITECTURE_ROWS)
        + " "
    )
    # A row within the noise only of a spread borrowed from another row is not yet a "no": its own seeds,
    # and vanilla's, may measure a narrower one.
    borrowed = [
        ROW_LABELS[row]
        for row, j in judged.items()
        if j.verdict == "within noise" and not (noise is not None and {row, BASELINE} <= noise.own)
    ]
    supporting = [row for row, j in judged.items() if j.supports]
    named = listed([ROW_LABELS[row] for row in supporting]) if supporting else ""
    verb = "is" if len(supporting) == 1 else "are"
    norms = {norm for row in supporting for norm in judged[row].norms}
    open_rows = missing or any(j.verdict == "unchecked" for j in judged.values())
    if any(j.is_evidence for j in judged.values()):
        evident = [ROW_LABELS[row] for row, j in judged.items() if j.is_evidence]
        answer = (
            f"{listed(evident)} {'meets' if len(evident) == 1 else 'meet'} the rule of evidence: the runs support "
            "the claim beyond ResNet-18."
        )
    elif supporting and len(norms) == len(THREAT_METRICS):
        answer = (
            f"{named} {verb} partial evidence, each in one threat model and none in both: the runs support the "
            "claim beyond ResNet-18 in each threat model, but through different rows."
        )
    elif supporting:
        answer = (
            f"{named} {verb} partial evidence, meeting the rule under {threat_words(norms)} alone: the runs support "
            "the claim beyond ResNet-18 in that threat model only; in the other, no ViT row"
            f"{' judged so far' if open_rows else ''} beats both vanilla and "
            "chance beyond the noise."
        )
    elif missing or any(j.verdict == "unchecked" for j in judged.values()):
        answer = (
            "The claim is not answered yet: a ViT row is still to run, or to be checked with AutoAttack and the "
            "masking checklist."
        )
    elif borrowed:
        answer = (
            f"The claim is not answered yet: {listed(borrowed)} {'is' if len(borrowed) == 1 else 'are'} within the "
            f"noise of a spread borrowed from other rows; the ViT's own {len(SEEDS)} seeds of each row will measure "
            "its spread."
        )
    else:
        answer = "No ViT row meets the rule of evidence: the runs do not show the effect on the ViT at this scale."
    return head + "; ".join(parts) + ". " + spread + answer


def alignment_scores(store: RunStore, scale: str, kind: str = "real") -> dict[str, dict[str, Any]]:
    """The PAG score and PGD-20 ℓ2 accuracy of every CIFAR-10 run at ``scale`` that has one (the
    gradient-masking chapter's measure, read from the store)."""
    return masking.pag_scores(masking.evaluated_runs(store.select(kind=kind, dataset="cifar10", scale=scale)))


def alignment_groups(scores: Mapping[str, Mapping[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """For :func:`pagcore.book.figures.alignment_scatter`: (alignment, PGD-20 ℓ2 accuracy) by how each
    model was trained, of the runs scored against the shared reference (those the correlation uses)."""
    reference = masking.shared_reference(scores)
    groups: dict[str, list[tuple[float, float]]] = {}
    for s in scores.values():
        if s["reference"] == reference:
            groups.setdefault(masking.training_words(s), []).append((s["alignment"], s["robust_l2"]))
    return groups


def alignment_verdict(scores: Mapping[str, Mapping[str, Any]], scale: str) -> str:
    """The verdict on "better alignment, more robustness": the rank correlation over the runs scored
    against one reference, read by whether its bootstrap interval excludes zero."""
    return f"Better alignment, more robustness (CIFAR-10, {scale} scale): {masking.correlation_sentence(scores)}"


def reference_words(scores: Mapping[str, Mapping[str, Any]], runs_dir: str = "") -> str:
    """The run whose input-gradients the alignment claim's scores are measured against, as a reader
    names it (:func:`pagcore.book.masking.shared_reference`)."""
    reference = masking.shared_reference(scores)
    if reference is None:
        return "no run yet"
    store = RunStore(runs_dir or None)
    return masking.run_label(store.run(reference)) if (store.root / reference).exists() else f"`{reference}`"


def score_based_reading(scale: str, runs_dir: str = "", kind: str = "real") -> str:
    """The same claim read against the score-based targets, a reference that favours no adversarially
    trained model (:func:`pagcore.book.score.stored_alignment_verdict`), so that the chapter's verdict
    stands beside the other reading of it."""
    store = RunStore(runs_dir or None)
    denoiser = score.book_denoiser(store)
    if denoiser is None:
        return "No denoiser is trained, so the claim is not read against the score-based targets."
    verdict = score.stored_alignment_verdict(store, denoiser.name, scale, kind)
    return (
        "Read instead against the score-based targets, which favour no adversarially trained model, with "
        f"AutoAttack ℓ2 as the robust accuracy: {verdict[0].lower()}{verdict[1:]}"
    )


def finding(scale: str, noise: Noise | None, runs_dir: str = "", kind: str = "real") -> str:
    """The chapter's verdicts for the book's opening box; ``noise`` is the rule's measured seed spread."""
    knobs = {"scale": scale}
    runs = chapter_runs("cifar10", boost_points(), knobs=knobs, runs_dir=runs_dir, kind=kind)
    verdict = boost_verdict(arms(runs, SEEDS), scale)
    seeded = chapter_runs("cifar10", architecture_points(scale, seeds=SEEDS), knobs=knobs, runs_dir=runs_dir, kind=kind)
    vit = first_seeds(seeded, ARCHITECTURE_ROWS)
    vit_noise = architecture_noise(noise, architecture_seeds(seeded, ARCHITECTURE_ROWS, SEEDS))
    others = architecture_verdict(vit, architecture_judgements(vit, vit_noise), {}, scale, noise=vit_noise)
    claim = alignment_verdict(alignment_scores(RunStore(runs_dir or None), scale, kind), scale)
    return f"Later version ({{ref}}`chapter-latest`): {verdict} {others} {claim}"
