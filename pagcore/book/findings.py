"""What the book finds, computed from the stored runs: per dataset, which rows are evidence for the
paper's claim under the rule of :mod:`pagcore.book.evidence`, and the box that opens the
introduction and the conclusion.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pagcore.book import evidence, latest, masking, score, smoothing
from pagcore.book.evidence import AlignmentSpread, Judgement, Noise
from pagcore.book.tables import class_mean_distance_ceiling
from pagcore.book.text import listed, percent
from pagcore.book.verdicts import TEACHER_FREE_ROWS, judge_table, row_caveats
from pagcore.data import SPECS
from pagcore.orchestrate.book_runs import NOISE_DATASET, results_rows, row_overrides
from pagcore.orchestrate.experiments import ROW_LABELS
from pagcore.orchestrate.queue import chapter_runs, seed_row_runs


def stored_table(dataset: str, scale: str, runs_dir: str = "", kind: str = "real") -> dict[str, Any]:
    """The stored run of every results-table row of ``dataset`` at ``scale``, the score-based row included
    where the dataset has one (None where no run exists)."""
    rows = {row: (row, row_overrides(dataset, row)) for row in results_rows(dataset)}
    return chapter_runs(dataset, rows, knobs={"scale": scale}, runs_dir=runs_dir, kind=kind)


def measured_noise(scale: str, runs_dir: str = "", kind: str = "real", dataset: str = NOISE_DATASET) -> Noise | None:
    """The seed spread of each of the rule's rows on CIFAR-10 at ``scale``, as ``dataset`` reads it
    (:func:`noise_on`), with the PAG score's seed spread
    (:func:`~pagcore.book.masking.measured_alignment_spread`)."""
    noise = _seed_noise(scale, runs_dir, kind, masking.measured_alignment_spread(runs_dir, kind))
    return noise_on(noise, dataset)


def _seed_noise(scale: str, runs_dir: str, kind: str, alignment: AlignmentSpread | None) -> Noise | None:
    """The rule's seed spreads on CIFAR-10 at ``scale`` (None until a row has two seeds stored), carrying
    the PAG score's ``alignment`` spread, measured once by the caller."""
    metrics = {row: [run.metrics for run in runs] for row, runs in seed_row_runs(scale, runs_dir, kind).items()}
    noise = evidence.seed_noise(metrics, f"{SPECS[NOISE_DATASET].title}, {scale} scale")
    return replace(noise, alignment=alignment) if noise is not None else None


def noise_on(noise: Noise | None, dataset: str) -> Noise | None:
    """CIFAR-10's ``noise`` as ``dataset`` reads it: its own on CIFAR-10, borrowed on any other dataset."""
    return noise.borrowed(SPECS[dataset].title) if noise is not None and dataset != NOISE_DATASET else noise


@dataclass(frozen=True)
class DatasetFinding:
    """The judged rows of one dataset at one scale, and the answer they give."""

    dataset: str
    scale: str
    judgements: dict[str, Judgement]
    caveats: dict[str, str] = field(default_factory=dict)  # row -> what its evidence may not mean

    @property
    def evidence_rows(self) -> list[str]:
        return [row for row, j in self.judgements.items() if j.is_evidence]

    @property
    def supporting_rows(self) -> list[str]:
        """The teacher-free rows that are evidence in at least one threat model."""
        return [row for row, j in self.judgements.items() if j.supports and row in TEACHER_FREE_ROWS]

    @property
    def supported_norms(self) -> list[str]:
        """The threat models in which some teacher-free row is evidence, in the rule's order."""
        held = {norm for row in self.supporting_rows for norm in self.judgements[row].norms}
        return [norm for norm in evidence.THREAT_METRICS if norm in held]

    @property
    def others_open(self) -> bool:
        """Whether a teacher-free row still awaits AutoAttack or the checklist: a claim about what no row
        shows is then a claim about the rows judged so far."""
        return any(j.verdict == "unchecked" for row, j in self.judgements.items() if row in TEACHER_FREE_ROWS)

    @property
    def answer(self) -> str:
        """'supports' when a teacher-free row (:data:`~pagcore.book.verdicts.TEACHER_FREE_ROWS`) is
        evidence, 'supports in part' when teacher-free rows are evidence in one threat model only (no more
        than chance in the other), 'teacher only' when only RIGD rows are evidence (in one threat model or
        both), 'unchecked' when no row is but a teacher-free row still awaits AutoAttack or the checklist,
        'within noise' when no teacher-free row is evidence but none is below vanilla or suspected of
        masking either (the noise hides any gap), 'does not support' when rows were judged and some
        teacher-free row is, 'no runs' otherwise."""
        if not self.judgements:
            return "no runs"
        rows = self.evidence_rows
        if any(row in TEACHER_FREE_ROWS for row in rows):
            return "supports"
        if self.supporting_rows:
            return "supports in part"
        if any(j.supports for j in self.judgements.values()):
            return "teacher only"
        if self.others_open:
            return "unchecked"
        free = [j.verdict for row, j in self.judgements.items() if row in TEACHER_FREE_ROWS]
        contradicted = any(verdict in ("not more robust", "masking suspected") for verdict in free)
        return "within noise" if "within noise" in free and not contradicted else "does not support"


def dataset_finding(dataset: str, scale: str, noise: Noise | None, runs_dir: str = "", kind: str = "real"):
    runs = stored_table(dataset, scale, runs_dir, kind)
    judged = judge_table(runs, noise, SPECS[dataset].num_classes) if noise is not None else {}
    return finding_of(dataset, scale, runs, judged, noise)


def finding_of(
    dataset: str, scale: str, runs: Mapping[str, Any], judged: dict[str, Judgement], noise: Noise | None
) -> DatasetFinding:
    """The finding of ``judged`` rows of the table ``runs`` (row -> run), with the caveats of each row
    that is evidence (:func:`~pagcore.book.verdicts.row_caveats`)."""
    ceiling = class_mean_distance_ceiling(dataset)
    caveats = {
        row: "; ".join(caveats)
        for row, judgement in judged.items()
        if judgement.supports and (caveats := row_caveats(row, runs[row], runs.get("vanilla"), ceiling, noise))
    }
    return DatasetFinding(dataset, scale, judged, caveats)


def _caveats(finding: DatasetFinding, rows: Sequence[str]) -> str:
    return "".join(f" ({ROW_LABELS.get(row, row)}: {finding.caveats[row]})" for row in rows if row in finding.caveats)


def _caveat_pointer(finding: DatasetFinding, rows: Sequence[str]) -> str:
    """The rows of ``rows`` that carry a caveat, pointed to rather than repeated: the box's first line
    stays short and the dataset's own line gives each caveat once."""
    named = [row for row in rows if row in finding.caveats]
    if not named:
        return ""
    return f" ({_rows(named)} with a caveat, given on the {SPECS[finding.dataset].title} line below)"


def _rows(rows: list[str]) -> str:
    return listed([ROW_LABELS.get(row, row) for row in rows])


def _supporting(finding: DatasetFinding) -> list[str]:
    """The teacher-free rows the dataset's answer rests on: those that are evidence in both threat
    models where any is, else those that are evidence in one."""
    if finding.answer == "supports":
        return [row for row in finding.evidence_rows if row in TEACHER_FREE_ROWS]
    return finding.supporting_rows


def _support_strength(finding: DatasetFinding) -> str:
    """Where the support rests on rows that carry caveats, which rows carry it without one ("" when
    every supporting row is free of caveats, or the dataset does not support the claim)."""
    if finding.answer not in ("supports", "supports in part"):
        return ""
    rows = _supporting(finding)
    clear = [row for row in rows if row not in finding.caveats]
    if len(clear) == len(rows):
        return ""
    if not clear:
        return ", but only with the caveats stated on each supporting row"
    return f", without caveat only through {_rows(clear)}"


def finding_sentence(finding: DatasetFinding, runs: Mapping[str, Any] | None = None) -> str:
    """The dataset's finding in words: which rows are evidence and why the others are not."""
    title = SPECS[finding.dataset].title
    if not finding.judgements:
        return (
            f"{title}, {finding.scale} scale: no row has been judged (it needs a vanilla run, a PAG run and the "
            "measured seed spread)."
        )
    parts = []
    rows = finding.evidence_rows
    if rows:
        one = len(rows) == 1
        parts.append(
            f"{_rows(rows)} {'is' if one else 'are'} more robust than vanilla and than chance beyond the noise under "
            f"PGD and AutoAttack, {'fits its' if one else 'fit their'} labels and {'passes' if one else 'pass'} the "
            "masking checklist" + _caveats(finding, rows)
        )
    for verdict in evidence.VERDICTS[1:]:
        judged = [row for row, j in finding.judgements.items() if j.verdict == verdict]
        if judged:
            # Rows judged for the same reasons are named together, the reasons once.
            by_reasons: dict[tuple[str, ...], list[str]] = {}
            for row in judged:
                by_reasons.setdefault(finding.judgements[row].reasons, []).append(row)
            each = "; ".join(
                f"{_rows(rows)} ({', '.join(reasons)}){_caveats(finding, rows)}" for reasons, rows in by_reasons.items()
            )
            parts.append(f"{verdict}: {each}")
    answer = {
        "supports": "supports the direction of the paper's claim",
        "supports in part": (
            f"supports the direction of the paper's claim under {evidence.threat_words(finding.supported_norms)} alone"
            f"{_support_strength(finding)}: in the other threat model no teacher-free row"
            f"{' judged so far' if finding.others_open else ''} beats both vanilla and "
            "chance beyond the noise"
        ),
        "teacher only": "supports it only through the rows that distil an adversarially trained teacher",
        "does not support": "does not support the paper's claim",
        "within noise": (
            "neither supports nor contradicts the paper's claim: no teacher-free row beats vanilla beyond the noise "
            "under every attack the rule asks for, and none is judged less robust than vanilla or suspected of masking"
        ),
        "unchecked": "does not yet answer: the stronger attacks or the checklist are still to run",
    }[finding.answer]
    return (
        f"{title}, {finding.scale} scale: "
        + "; ".join(parts)
        + f". The evidence {answer}{_support_strength(finding) if finding.answer == 'supports' else ''}."
    )


def toy_finding(record: Mapping[str, Any] | None) -> str:
    """The toy experiment's finding from its record: PAG against vanilla under the attack, over seeds."""
    if record is None:
        return "Toy problem: its run has not been made yet."
    per_seed = list(record["per_seed"].values())
    pag = [s["pag"]["pgd"] for s in per_seed]
    vanilla = [s["vanilla"]["pgd"] for s in per_seed]
    paper = record["paper"]
    setting = "the paper's data and network, λ and pool size chosen here, " if record.get("kind") == "real" else ""

    def spread(values: list[float]) -> str:
        return percent(statistics.fmean(values), statistics.stdev(values))

    head = f"Toy problem ({setting}{len(per_seed)} seed{'s' if len(per_seed) > 1 else ''}): under the attack"
    paper_words = f"(paper: {percent(paper['pag']['pgd'])} and {percent(paper['vanilla']['pgd'])})"
    if len(per_seed) < 2:
        return (
            f"{head} the PAG model keeps {percent(pag[0])} of the test points and vanilla {percent(vanilla[0])} "
            f"{paper_words}; one seed gives no spread to judge the gap against."
        )
    gap, error = evidence.mean_difference(vanilla, pag)  # the means over seeds are compared
    verdict = {
        1: "PAG is more robust than vanilla beyond the noise",
        -1: "PAG is less robust than vanilla beyond the noise",
        0: "the two are not distinguishable",
    }[evidence.side(gap, error)]
    return (
        f"{head} the PAG model keeps {spread(pag)} of the test points (mean ± seed spread), vanilla "
        f"{spread(vanilla)} {paper_words}; {verdict} ({evidence.SIGNIFICANCE:g} standard errors of the difference "
        f"of the means over {len(per_seed)} seeds)."
    )


def paper_scale_runs(runs_dir: str = "", kind: str = "real") -> int:
    """How many results-table rows have a stored paper-scale run, over both datasets."""
    return sum(
        run is not None
        for dataset in ("cifar10", "stl10")
        for run in stored_table(dataset, "paper", runs_dir, kind).values()
    )


def _dataset_answer(finding: DatasetFinding) -> str:
    """One dataset's answer for the box's first line, by the rule of evidence."""
    if finding.answer in ("supports", "supports in part"):
        rows = _supporting(finding)
        one = len(rows) == 1
        where = (
            "beyond the measured noise"
            if finding.answer == "supports"
            else f"beyond the measured noise under {evidence.threat_words(finding.supported_norms)} alone (in the "
            f"other threat model no teacher-free row{' judged so far' if finding.others_open else ''} beats both)"
        )
        return (
            f"{_rows(rows)}, trained without adversarial examples, {'is' if one else 'are'} more robust than vanilla "
            f"and than a constant classifier {where}, {'fits its' if one else 'fit their'} labels and "
            f"{'passes' if one else 'pass'} the masking checklist" + _caveat_pointer(finding, rows)
        )
    return {
        "teacher only": "only rows distilled from an adversarially trained teacher meet the rule of evidence",
        "does not support": (
            "no teacher-free PAG row (one whose targets need no robust model) meets the rule of evidence (each "
            "row's reason is on its line below)"
        ),
        "within noise": (
            "no teacher-free PAG row (one whose targets need no robust model) beats vanilla beyond the noise "
            "under every attack the rule asks for "
            "(each row's reason is on its line below)"
        ),
        "unchecked": "not answered yet: AutoAttack or the masking checklist has still to run on some rows",
    }[finding.answer]


def findings_box(toy_record: Path, runs_dir: str = "", kind: str = "real") -> str:
    """The 'what this book finds' box, as MyST markdown, computed from the stored runs."""
    spread = masking.measured_alignment_spread(runs_dir, kind)  # one scan of the store serves every line
    noise = _seed_noise("cpu", runs_dir, kind, spread)
    paper_runs = paper_scale_runs(runs_dir, kind)
    findings = [
        dataset_finding(dataset, "cpu", noise_on(noise, dataset), runs_dir, kind) for dataset in ("cifar10", "stl10")
    ]
    judged = [f for f in findings if f.answer != "no runs"]
    answers = [f.answer for f in judged]
    if noise is None:
        answer = "**Not yet judged.** The seed spread that the rule needs has not been measured"
    elif not judged:
        answer = "**Not yet answered.** No results-table run exists"
    else:
        if all(a == "supports" for a in answers):
            headline = "**Yes, in direction, at a reduced scale.**"
        elif {"supports", "supports in part"} & set(answers):
            headline = "**Partly, at a reduced scale.**"
        elif all(a == "unchecked" for a in answers):
            headline = "**Not yet checked.**"
        else:
            headline = "**Not shown at the reduced scale.**"
        answer = headline + " " + "; ".join(f"{SPECS[f.dataset].title}: {_dataset_answer(f)}" for f in judged)
    scale = (
        "no paper-scale CIFAR-10 or STL-10 run exists, so every real-data number is at the reduced `cpu` scale "
        "(a narrow ResNet-18, a short schedule) and none of them reproduces a number of the paper"
        if paper_runs == 0
        else f"{paper_runs} results-table row{'s' if paper_runs > 1 else ''} at the paper's scale "
        f"{'have' if paper_runs > 1 else 'has'} a run, which this box does not judge yet"
    )
    noise_words = (
        f"a row's noise is its own seed spread where {evidence.OWN_SPREAD_SEEDS} seeds measure it, and otherwise "
        f"the widest measured (on {noise.measured_on}, under ℓ∞ PGD-20: {noise.words('linf', ROW_LABELS)}; under ℓ2: "
        f"{noise.words('l2', ROW_LABELS)}; every STL-10 row takes the widest, and a ViT row its own where "
        f"{evidence.OWN_SPREAD_SEEDS} ViT seeds measure it, else the widest on either network); two numbers "
        f"differ only when their gap exceeds {evidence.SIGNIFICANCE:g} standard "
        "errors of the difference, which combines both rows' seed spreads and both numbers' sampling errors"
        + (f"; {apart}" if (apart := noise.widest_apart(ROW_LABELS)) else "")
        + (f"; {noise.alignment.words()}" if noise.alignment is not None else "")
        if noise is not None
        else "no seed spread has been measured yet, so no row is judged"
    )
    lines = [
        "```{admonition} What this book finds",
        ":class: important",
        "",
        f"*Does training for perceptually aligned gradients alone, never on an attacked image, make a classifier "
        f"robust?* {answer}; {scale}.",
        "",
        f"- {toy_finding(json.loads(toy_record.read_text()) if toy_record.exists() else None)}",
        *(f"- {finding_sentence(f)}" for f in findings),
        f"- {score.box_line('cpu', runs_dir, kind)}",
        f"- {smoothing.finding('cpu', spread, runs_dir, kind)}",
        f"- {latest.finding('cpu', noise, runs_dir, kind)}",
        f"- The rule ({{ref}}`rule-of-evidence`): a row counts as evidence only if its clean accuracy passes "
        f"{evidence.FIT_FACTOR:g} × chance by more than its noise, it beats vanilla beyond the noise under PGD and "
        "AutoAttack in both threat models, its strongest attack in each leaves more than chance beyond the noise, "
        "and it passes the masking checklist (partial evidence: all but chance in one threat model); "
        f"{noise_words}.",
        "```",
    ]
    return "\n".join(lines)
