"""The reproduction status: every number the paper reports beside ours, or "not run", per scale.

:func:`reproduction_status` walks the paper's results (the toy experiment, Tables 1, 2 and 4,
Figure 5) and, for each cell and each scale (``paper``, ``cpu``), looks up the run that answers
it: the toy run's record, and the run store for everything else. Only ``real`` runs count; smoke
and pilot runs never appear.

Each row carries a verdict computed from one rule (:data:`REPRODUCED_WITHIN`, :func:`verdict`): a
number of ours at the paper's scale reproduces the paper's when the two are within the tolerance;
a number at any other scale is a reduced protocol and never counts, however close it lands. The
rest of the module turns the rows into the status page: its summary, its one figure, and narrow
tables (measured rows shown, rows not yet run folded into a dropdown).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pagcore.book.style import COLORS, TEXT_WIDTH, book_style, legend_outside
from pagcore.book.tables import seed_summary, training_devices
from pagcore.book.text import METRIC_COLUMNS, markdown_table, percent, short_device, shown_points, signed_points
from pagcore.data import SPECS
from pagcore.orchestrate.book_runs import SEEDS
from pagcore.orchestrate.experiments import PAPER_ROWS, ROW_LABELS, RealDataExperiment
from pagcore.paper import reported
from pagcore.store.runs import Run, RunStore

SCALE_ORDER = ("paper", "cpu")

TOY = "toy"
"""The ``dataset`` of the toy experiment's rows: the 2-D problem of Section 5.1, with the paper's data and
network (λ and the pool size, which the paper does not give, are chosen by the book)."""

# How far (as a fraction: 0.02 is two accuracy points) a paper-scale number of ours may lie from
# the paper's and still reproduce it. The paper gives a spread over training seeds for one row
# only (Table 4: one image on CIFAR-10, three seeds); twice its largest standard deviation (ℓ2,
# 0.91 points) is how far a rerun of the paper's own protocol can land from the reported number
# without meaning anything. Rounded up to a whole point, it stands for every row, since no other
# row has a reported spread: a tighter bound would fail faithful reruns, a looser one would pass
# real differences (the paper's own rows differ by a few points).
REPRODUCED_WITHIN = math.ceil(200 * max(reported.SEED_ERROR_BARS["std"].values())) / 100

REPRODUCED = "reproduced"
# Beyond the tolerance but within twice our own seed spread: the paper's single run may be one draw of
# ours, but a bound that wide confirms nothing, so it is not counted as a reproduction.
WITHIN_SPREAD = "within our seed spread"
NOT_REPRODUCED = "not reproduced"
NOT_COMPARABLE = "reduced protocol, not comparable"
NOT_RUN = "not run"

# The figure's three panels: (metric key, title). The toy's only attack, an ℓ2 PGD-10, joins the ℓ2 panel.
PANELS = (("clean", "clean"), ("linf", "ℓ∞ PGD-20"), ("l2", "ℓ2 PGD-20 (toy: PGD-10)"))
PANEL_OF = {"clean": "clean", "linf": "linf", "l2": "l2", "pgd": "l2"}

# The figure's series: colour and marker both tell the scales apart (readable in greyscale too).
SERIES = {
    "paper": {"label": "paper scale", "color": COLORS[0], "marker": "s"},
    "toy": {"label": "toy (paper's data and network)", "color": COLORS[0], "marker": "*"},
    "cpu": {"label": "cpu scale (not comparable)", "color": COLORS[3], "marker": "o"},
}

BAND_GREY = "0.8"


@dataclass
class StatusRow:
    experiment: str
    setting: str
    metric: str
    paper: float
    ours: float | None
    scale: str = "paper"
    schedule: str = ""
    device: str = ""
    date: str = ""
    key: str = ""  # the metric's key: clean, linf, l2 (PGD-20), or pgd (the toy's ℓ2 PGD-10)
    dataset: str = ""  # cifar10, stl10, or TOY
    # Where ours is a mean over our own seeds and the paper's a single run (the toy), the paper's number
    # is one draw from a spread we measured: within twice our seed standard deviation it cannot be told
    # from ours (WITHIN_SPREAD).
    own_spread: float = 0.0
    test_set: str = ""  # what ours was measured on, in the run's words ("all 10,000 CIFAR-10 test images")
    measured_by: str = ""  # what produced ours (a run's name): one number shown in two tables is drawn once

    @property
    def gap(self) -> float | None:
        """Ours minus the paper's, in the same units (fractions)."""
        return None if self.ours is None else self.ours - self.paper

    @property
    def shown_gap(self) -> float | None:
        """The gap in points as the page shows it: ours minus the paper's, each to one decimal."""
        return None if self.ours is None else shown_points(self.ours, self.paper)

    @property
    def verdict(self) -> str:
        return verdict(self)


def verdict(row: StatusRow) -> str:
    """The rule of the page: no number, "not run"; a scale other than the paper's, never a
    reproduction, whatever the gap; at the paper's scale, "reproduced" when the gap as shown on
    the page (points, one decimal) is at most :data:`REPRODUCED_WITHIN`, and "within our seed
    spread" when it is wider but within twice our own seed spread, where ours is a mean over seeds
    and the paper's one run."""
    if row.ours is None:
        return NOT_RUN
    if row.scale != "paper":
        return NOT_COMPARABLE
    # Judged on the rounded gap, so that a reader who sees "+2.0" next to a 2-point tolerance sees it pass.
    if abs(row.shown_gap) <= round(100 * REPRODUCED_WITHIN, 1):
        return REPRODUCED
    return WITHIN_SPREAD if abs(row.shown_gap) <= round(100 * 2 * row.own_spread, 1) else NOT_REPRODUCED


def _provenance(run: Run) -> dict[str, str]:
    sessions = run.record.get("sessions", [])
    return {
        "schedule": f"{run.params['epochs']} epochs, width {run.params['width']}",
        "device": "; ".join(training_devices(run)),
        "date": sessions[-1]["finished"][:10] if sessions else "",
        "test_set": (run.metrics or {}).get("test_set", ""),
        "measured_by": run.name,
    }


TOY_SETTINGS = {"vanilla": "Vanilla", "pag": "PAG"}
TOY_METRICS = {"clean": "clean", "pgd": "ℓ2 PGD-10"}


def toy_rows(record_path: Path) -> list[StatusRow]:
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    rows = []
    for model, setting in TOY_SETTINGS.items():
        for metric, title in TOY_METRICS.items():
            ours = record["summary"][model][metric] if record and record.get("kind") == "real" else None
            extra = {}
            if ours is not None:
                seeds = record["summary"]["seeds"]
                per_seed = [s[model][metric] for s in record.get("per_seed", {}).values()]
                extra = {
                    "schedule": f"{record['parameters']['epochs']} epochs, {len(seeds)} seeds",
                    "device": short_device(record["device"]),
                    "date": record["finished"][:10],
                    "own_spread": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
                    "measured_by": f"{record_path.name}: {model}",
                }
            rows.append(
                StatusRow(
                    "Toy (Section 5.1)",
                    setting,
                    title,
                    reported.TOY[model][metric],
                    ours,
                    key=metric,
                    dataset=TOY,
                    **extra,
                )
            )
    return rows


def table_rows(store: RunStore, dataset: str, scale: str) -> list[StatusRow]:
    experiment = RealDataExperiment(dataset, {"scale": scale}, store=store)
    rows = []
    for row in PAPER_ROWS:
        run = experiment.run(row)
        for metric, title in METRIC_COLUMNS:
            extra = _provenance(run) if run else {}
            rows.append(
                StatusRow(
                    f"Table {reported.TABLE_NUMBER[dataset]} ({SPECS[dataset].title})",
                    ROW_LABELS[row],
                    title,
                    reported.TABLES[dataset][row][metric],
                    run.metrics[metric] if run else None,
                    scale,
                    key=metric,
                    dataset=dataset,
                    **extra,
                )
            )
    return rows


def seed_runs(store: RunStore, scale: str, seeds: tuple[int, ...] = SEEDS) -> dict[int, Run | None]:
    """Table 4's runs at ``scale``: one image on CIFAR-10, per seed (None: not run)."""
    experiment = RealDataExperiment("cifar10", {"scale": scale}, store=store)
    return {seed: experiment.run("one_image", seed=seed) for seed in seeds}


def seed_rows(store: RunStore, scale: str, seeds: tuple[int, ...] = SEEDS) -> list[StatusRow]:
    runs = seed_runs(store, scale, seeds)
    summary = seed_summary(runs)
    done = [r for r in runs.values() if r is not None]
    extra: dict[str, Any] = {}
    if done:
        extra = _provenance(done[0])
        extra["schedule"] += f", {len(done)} of {len(seeds)} seeds"
        extra["measured_by"] = "mean of " + ", ".join(run.name for run in done)
    rows = []
    for metric, title in METRIC_COLUMNS:
        rows.append(
            StatusRow(
                "Table 4 (One Image, CIFAR-10)",
                "mean",
                title,
                reported.SEED_ERROR_BARS["mean"][metric],
                summary["mean"][metric] if summary else None,
                scale,
                key=metric,
                dataset="cifar10",
                **extra,
            )
        )
    return rows


def lambda_rows(store: RunStore, scale: str) -> list[StatusRow]:
    experiment = RealDataExperiment("cifar10", {"scale": scale}, store=store)
    rows = []
    for lam, values in reported.LAMBDA_ABLATION.items():
        run = experiment.run("class_mean", lam=lam)
        for metric, title in METRIC_COLUMNS:
            extra = _provenance(run) if run else {}
            rows.append(
                StatusRow(
                    "Figure 5 (Class Mean, CIFAR-10)",
                    f"λ = {lam:g}",
                    title,
                    values[metric],
                    run.metrics[metric] if run else None,
                    scale,
                    key=metric,
                    dataset="cifar10",
                    **extra,
                )
            )
    return rows


def reproduction_status(store: RunStore, toy_record: Path) -> list[StatusRow]:
    """Every reported number of the paper with ours beside it (``ours=None``: not run), at each scale.

    The toy experiment runs with the paper's data and network on any machine, so it has paper-scale rows only.
    """
    rows = toy_rows(toy_record)
    for scale in SCALE_ORDER:
        rows += [
            *table_rows(store, "cifar10", scale),
            *table_rows(store, "stl10", scale),
            *seed_rows(store, scale),
            *lambda_rows(store, scale),
        ]
    return rows


def counts(rows: list[StatusRow]) -> dict[str, dict[str, int]]:
    """Per scale: how many of the paper's numbers it has cells for, how many have a run, and how
    many of those the rule counts as reproduced (never any outside the paper's scale)."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = out.setdefault(row.scale, {"cells": 0, "measured": 0, "reproduced": 0})
        entry["cells"] += 1
        entry["measured"] += row.ours is not None
        entry["reproduced"] += row.verdict == REPRODUCED
    return out


# -- words ------------------------------------------------------------------------------------------


def points_text(fraction: float) -> str:
    """A tolerance or distance in accuracy points, one decimal: ``0.02`` -> ``"2.0 points"``."""
    return f"{100 * fraction:.1f} points"


def unbroken(cell: str) -> str:
    """``cell`` with no line break inside (no-break spaces and hyphens), for the short phrases of a
    narrow table: the browser then narrows the other columns instead of wrapping this one."""
    return cell.replace(" ", "\u00a0").replace("-", "\u2011")


def _join(items: Sequence[str], word: str = "and") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def _dataset_titles(datasets: Iterable[str]) -> list[str]:
    return [SPECS[d].title for d in SPECS if d in set(datasets)]


def summary_sentences(rows: list[StatusRow]) -> str:
    """Two sentences: how many of the paper's numbers have one of ours at each scale, and where
    the real-data numbers stand (all at the reduced scale, if that is so)."""
    paper = [r for r in rows if r.scale == "paper"]
    measured = [r for r in paper if r.ours is not None]

    def named(verdict: str) -> str:
        # Which numbers, not only how many: a reproduced clean accuracy of 100 % says less than a robust one.
        which = [f"{r.setting} {r.metric}" for r in measured if r.verdict == verdict]
        how = f"reproduced within {points_text(REPRODUCED_WITHIN)}" if verdict == REPRODUCED else f"only {verdict}"
        return f"{len(which)} {how}: {_join(which)}"

    judged = "; ".join(named(v) for v in (REPRODUCED, WITHIN_SPREAD) if any(r.verdict == v for r in measured))
    judged = judged or "none reproduced"
    if not measured:
        paper_part = "none has one of ours at the paper's scale"
    elif all(r.dataset == TOY for r in measured):
        paper_part = (
            f"{len(measured)} have one of ours with the paper's data and network, all from the toy experiment "
            f"({judged}; by the rule below)"
        )
    else:
        paper_part = f"{len(measured)} have one of ours at the paper's scale ({judged})"
    reduced = {
        scale: sum(r.ours is not None for r in rows if r.scale == scale)
        for scale in dict.fromkeys(r.scale for r in rows)
        if scale != "paper"
    }
    reduced_part = " and ".join(f"{n} have one at the reduced {scale} scale" for scale, n in reduced.items())
    first = f"Of the paper's {len(paper)} numbers, {paper_part}" + (f", and {reduced_part}." if reduced_part else ".")

    real = [r for r in rows if r.dataset != TOY]
    real_paper = [r for r in real if r.scale == "paper"]
    results = list(dict.fromkeys(r.experiment.split(" (")[0] for r in real_paper))
    missing = _dataset_titles({r.dataset for r in real_paper} - {r.dataset for r in real_paper if r.ours is not None})
    if not any(r.ours is not None for r in real):
        second = f"No real-data run exists yet at any scale, so {_join(results)} read “not run”."
    elif not any(r.ours is not None for r in real_paper):
        scales = _join(list(dict.fromkeys(r.scale for r in real if r.ours is not None)))
        second = (
            f"Every real-data number of ours is at the reduced {scales} scale: no paper-scale "
            f"{_join(missing, 'or')} run exists, so none of {_join(results, 'or')} is reproduced (or refuted) yet."
        )
    else:
        done = [r for r in real_paper if r.ours is not None]
        second = (
            f"At the paper's scale, {sum(r.verdict == REPRODUCED for r in done)} of the {len(done)} real-data "
            f"numbers with a run are reproduced within {points_text(REPRODUCED_WITHIN)}"
            + (f"; no paper-scale {_join(missing, 'or')} run exists yet." if missing else ".")
        )
    return f"{first} {second}"


def rule_text() -> str:
    """The tolerance and the rule, in words, from the constants that the verdicts use."""
    std = reported.SEED_ERROR_BARS["std"]
    widest = max(std, key=std.get)
    title = dict(METRIC_COLUMNS)[widest]
    return (
        f"A number of ours reproduces the paper's when it was measured at the paper's scale and lies within "
        f"{points_text(REPRODUCED_WITHIN)} of it (the gap as shown, to one decimal). That is twice the largest "
        f"standard deviation over seeds that the paper reports ({points_text(std[widest])} for {title} in its "
        f"Table 4, over {reported.SEED_ERROR_BARS['seeds']} seeds), rounded up to a whole point: how far a "
        "faithful rerun may land from the paper's number by the luck of its seed. The paper reports a spread "
        "for that one row only, so the same tolerance serves every row. Where ours is a mean over our own "
        "seeds and the paper's a single run (the toy), the paper's number is one draw from the spread we "
        f"measured: a gap beyond the tolerance but within twice our seed standard deviation is “{WITHIN_SPREAD}”, "
        "which the paper's run cannot be told from, and which confirms nothing either, so it is not counted as "
        "a reproduction. "
        f"A number at the reduced `cpu` scale is never counted as a reproduction, however close it lands: its "
        f"verdict is “{NOT_COMPARABLE}”, because a narrower network trained for fewer epochs on sampled "
        "target classes answers a different question. The verdict column of every table below applies this "
        "rule."
    )


# -- the figure -------------------------------------------------------------------------------------


def series_of(row: StatusRow) -> str:
    """The figure series a measured row belongs to: the toy, or its scale."""
    return "toy" if row.dataset == TOY else row.scale


def drawn_rows(rows: Iterable[StatusRow]) -> list[StatusRow]:
    """The measured rows as the figure draws them: a number that appears twice on the page (Table 1's
    class mean is also Figure 5's λ = 0.4) once, so that what the figure shows is counted once too."""
    seen, drawn = set(), []
    for row in rows:
        if row.ours is None:
            continue
        point = (row.measured_by or id(row), row.key, row.paper)
        if point not in seen:
            seen.add(point)
            drawn.append(row)
    return drawn


def figure_points(rows: list[StatusRow]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per series and panel, the (paper, ours) points in percent of :func:`drawn_rows`."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for row in drawn_rows(rows):
        panel = out.setdefault(series_of(row), {key: [] for key, _ in PANELS})[PANEL_OF[row.key]]
        panel.append((100 * row.paper, 100 * row.ours))
    return {name: out[name] for name in SERIES if name in out}


def comparison_figure(rows: list[StatusRow]) -> Figure:
    """The paper's number (x) against ours (y), one panel per metric, one series per scale, with the
    diagonal y = x and the band of :data:`REPRODUCED_WITHIN` around it; the legend sits below the panels."""
    band = 100 * REPRODUCED_WITHIN
    band_label = f"within ±{band:.1f} points"
    points = figure_points(rows)
    with book_style():
        fig, axes = plt.subplots(
            1, len(PANELS), figsize=(TEXT_WIDTH, 0.5 * TEXT_WIDTH), sharey=True, layout="constrained"
        )
        for ax, (key, title) in zip(axes, PANELS):
            ax.fill_between(
                [0, 100], [-band, 100 - band], [band, 100 + band], color=BAND_GREY, linewidth=0, label=band_label
            )
            ax.plot([0, 100], [0, 100], color="0.3", linewidth=0.8, linestyle="--", marker="", label="y = x")
            for name, panels in points.items():
                if panels[key]:
                    style = SERIES[name]
                    xs, ys = zip(*panels[key])
                    ax.scatter(
                        xs,
                        ys,
                        s=80 if style["marker"] == "*" else 28,
                        color=style["color"],
                        marker=style["marker"],
                        edgecolors="white",
                        linewidths=0.4,
                        label=style["label"],
                        zorder=3,
                        clip_on=False,
                    )
            ax.set(xlim=(-3, 103), ylim=(-3, 103), xticks=(0, 50, 100), yticks=(0, 50, 100), title=title)
            ax.set_aspect("equal")
            ax.set_xlabel("paper (%)")
        axes[0].set_ylabel("ours (%)")
        order = tuple(SERIES[name]["label"] for name in points) + ("y = x", band_label)
        legend_outside(fig, where="below", order=order)
    return fig


def figure_reading(rows: list[StatusRow]) -> str:
    """One sentence on what the figure shows, computed from the points it draws."""
    measured = drawn_rows(rows)
    if not measured:
        return "No run has produced a number yet, so the figure has no points."
    parts = []
    paper = [r for r in measured if r.scale == "paper"]
    if paper:
        inside = sum(r.verdict == REPRODUCED for r in paper)  # the band the figure draws is the tolerance
        which = (
            f"the toy experiment's {len(paper)} points"
            if all(r.dataset == TOY for r in paper)
            else f"the {len(paper)} paper-scale points"
        )
        part = f"{inside} of {which} lie inside the band"
        spread = sum(r.verdict == WITHIN_SPREAD for r in paper)
        if spread:
            part += (
                f" ({spread} more {'lies' if spread == 1 else 'lie'} outside it but within twice our seed spread: "
                "the paper's single run cannot be told from ours, nor is it confirmed)"
            )
        parts.append(part)
    reduced = [r for r in measured if r.scale != "paper"]
    if reduced:
        band = round(100 * REPRODUCED_WITHIN, 1)
        below = sum(r.shown_gap < -band for r in reduced)
        above = sum(r.shown_gap > band for r in reduced)
        inside = len(reduced) - below - above
        gaps = {
            title: statistics.median(r.shown_gap for r in reduced if PANEL_OF[r.key] == key)
            for key, title in METRIC_COLUMNS
            if any(PANEL_OF[r.key] == key for r in reduced)
        }
        worst = min(gaps, key=gaps.get)
        scales = _join(sorted({r.scale for r in reduced}))
        parts.append(
            f"{below} of the {len(reduced)} {scales}-scale points fall below the band, furthest in {worst} "
            f"accuracy (median gap {signed_points(gaps[worst])} points), {above} lie above it, and the {inside} "
            "that land inside it still reproduce nothing, since their protocol differs"
        )
    # The tables count a number once per table it appears in; say why the figure's count is smaller.
    twice = sum(r.ours is not None for r in rows) - len(measured)
    if twice:
        parts.append(
            f"the {twice} number{'s' if twice > 1 else ''} that {'appear' if twice > 1 else 'appears'} in two of the "
            f"tables {'are' if twice > 1 else 'is'} drawn and counted once"
        )
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:]


# -- tables -----------------------------------------------------------------------------------------

MEASURED_HEADER = ("setting", "metric", "paper", "ours", "gap", "verdict")


def _groups(rows: Iterable[StatusRow]) -> dict[tuple[str, str], list[StatusRow]]:
    groups: dict[tuple[str, str], list[StatusRow]] = {}
    for row in rows:
        groups.setdefault((row.experiment, row.scale), []).append(row)
    return groups


def _scale_words(experiment: str, scale: str) -> str:
    if experiment.startswith("Toy"):
        return "the paper's data and network"
    return "paper scale" if scale == "paper" else f"{scale} scale (reduced protocol)"


def measured_tables(rows: list[StatusRow]) -> str:
    """MyST Markdown: one narrow table per result and scale, of the rows that have a number of ours,
    each with its gap in points and its verdict. A setting's name is written on its first row only."""
    groups = _groups(r for r in rows if r.ours is not None)
    if not groups:
        return "*No real run exists yet: every number of the paper reads “not run” below.*"
    blocks = []
    for (experiment, scale), group in groups.items():
        cells, previous = [], None
        for r in group:
            cells.append(
                (
                    r.setting if r.setting != previous else "",
                    r.metric,
                    percent(r.paper),
                    percent(r.ours, r.own_spread or None),
                    signed_points(r.shown_gap),
                    unbroken(r.verdict),
                )
            )
            previous = r.setting
        caption = f"Ours beside the paper's {experiment}, {_scale_words(experiment, scale)}"
        if any(r.own_spread for r in group):
            caption += "; ours as the mean ± standard deviation over our seeds"
        subsets = sorted({r.test_set for r in group if r.test_set and not r.test_set.startswith("all ")})
        if subsets:  # the paper's numbers are on the whole test set
            caption += f"; ours on the {' and the '.join(subsets)}, the paper's on the whole test set"
        name = "tab-status-" + re.sub(r"[^a-z0-9]+", "-", f"{experiment} {scale}".lower()).strip("-")
        blocks.append(f"```{{table}} {caption}\n:name: {name}\n\n{markdown_table(MEASURED_HEADER, cells)}\n```")
    return "\n\n".join(blocks)


def not_run_dropdowns(rows: list[StatusRow]) -> str:
    """MyST Markdown: per scale, a closed dropdown listing the paper's numbers that have no run of
    ours there, one line per setting (the paper's values in the metric columns)."""
    blocks = []
    for scale in dict.fromkeys(r.scale for r in rows):
        missing = [r for r in rows if r.scale == scale and r.ours is None]
        if not missing:
            continue
        settings: dict[tuple[str, str], dict[str, str]] = {}
        for r in missing:
            value = percent(r.paper) + (" (PGD-10)" if r.key == "pgd" else "")
            settings.setdefault((r.experiment, r.setting), {})[PANEL_OF[r.key]] = value
        table = markdown_table(
            ("result", "setting", *(title for _, title in METRIC_COLUMNS)),
            [
                (experiment, setting, *(values.get(key, "—") for key, _ in METRIC_COLUMNS))
                for (experiment, setting), values in settings.items()
            ],
        )
        title = "the paper's scale" if scale == "paper" else f"the {scale} scale"
        blocks.append(
            f":::{{dropdown}} Not run at {title}: {len(missing)} numbers ({len(settings)} settings)\n"
            f"The paper's values of the numbers that no run of ours answers yet at {title}.\n\n{table}\n:::"
        )
    return "\n\n".join(blocks) or "*Every number of the paper has a run of ours at every scale.*"


def provenance_table(rows: list[StatusRow]) -> str:
    """Markdown: for each result and scale with a run, the schedule, device and dates behind its numbers."""
    out = []
    for (experiment, scale), group in _groups(r for r in rows if r.ours is not None).items():
        dates = sorted({r.date for r in group if r.date})
        out.append(
            (
                experiment,
                "paper" if experiment.startswith("Toy") else scale,
                "; ".join(dict.fromkeys(r.schedule for r in group)),
                "; ".join(dict.fromkeys(r.device for r in group)),
                " to ".join(unbroken(d) for d in dict.fromkeys((dates[0], dates[-1]))) if dates else "",
            )
        )
    if not out:
        return "*No run exists yet, so there is nothing to trace.*"
    return markdown_table(("result", "scale", "schedule", "device", "trained"), out)


def seed_table(store: RunStore, scales: Sequence[str] = SCALE_ORDER, seeds: tuple[int, ...] = SEEDS) -> str:
    """Markdown: Table 4 as mean ± sample std over seeds, the paper's row first, then ours per scale."""
    paper = reported.SEED_ERROR_BARS
    rows = [
        (
            f"paper ({paper['seeds']} seeds)",
            *(percent(paper["mean"][key], paper["std"][key]) for key, _ in METRIC_COLUMNS),
        )
    ]
    for scale in scales:
        found = seed_summary(seed_runs(store, scale, seeds))
        label = f"ours, {scale} scale"
        if found is None:
            rows.append((label, *([percent(None)] * len(METRIC_COLUMNS))))
        else:
            rows.append(
                (
                    f"{label} ({found['n']} of {len(seeds)} seeds)",
                    *(percent(found["mean"][key], found["std"][key]) for key, _ in METRIC_COLUMNS),
                )
            )
    return markdown_table(("", *(title for _, title in METRIC_COLUMNS)), rows)
