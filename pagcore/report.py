"""Small helpers the notebooks use to put results on the page: tables, records and glue.

Numbers reach the book's prose only through :func:`glue`, which hands them to myst-nb; the
tables here are plain Markdown so they read the same in Jupyter, in the HTML book and on
GitHub.
"""

from __future__ import annotations

import ast
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from . import paper
from .plotting import image_grid, load_pag_grid
from .targets import MODEL_FREE_SOURCES


def _show_markdown(text: str) -> None:
    """Display Markdown in a notebook; IPython is imported only here, so the rest of this module
    (and the status page's data, which uses it) works without Jupyter."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def percent(value: float | None, std: float | None = None, digits: int = 1) -> str:
    """``0.755`` -> ``"75.5%"``; with a std, ``"75.5 ± 2.1%"``; ``None`` -> ``"not run"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not run"
    if std is None:
        return f"{100 * value:.{digits}f}%"
    return f"{100 * value:.{digits}f} ± {100 * std:.{digits}f}%"


def mean_std(experiment: Any, model: str, metric: str) -> str:
    """A toy experiment's mean ± std over seeds of ``metric`` for ``model``, as a percentage."""
    return percent(experiment.mean(model, metric), experiment.std(model, metric))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (tied values share their mean rank);
    NaN when either sequence is constant."""

    def ranks(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        result = [0.0] * len(values)
        start = 0
        while start < len(order):
            end = start
            while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
                end += 1
            for i in order[start : end + 1]:
                result[i] = (start + end) / 2
            start = end + 1
        return result

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    spread = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / spread if spread else float("nan")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def show_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    _show_markdown(markdown_table(header, rows))


def show_record(record: dict[str, Any]) -> None:
    """Display a provenance record: the facts first, the full JSON folded below."""
    facts = [
        ("kind", record.get("kind")),
        ("code version (git)", record.get("git")),
        ("device", record.get("device")),
        ("torch", record.get("torch")),
        ("started (UTC)", record.get("started")),
        ("wall time", f"{record.get('wall_seconds', float('nan')):.1f} s"),
    ]
    text = markdown_table(("run record", ""), facts)
    text += "\n\n<details><summary>parameters</summary>\n\n```json\n"
    text += json.dumps(record.get("parameters", {}), indent=1, sort_keys=True)
    text += "\n```\n</details>"
    _show_markdown(text)


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's ``{glue}`` roles (no-op without myst-nb)."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # plain Jupyter without the book's tooling: nothing to glue into
        return
    myst_glue(name, value, display=display)


# -- the parameters a chapter ran with ------------------------------------------------------

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def parameter_names(notebook: str | Path) -> list[str]:
    """The names assigned in a notebook's cell tagged ``parameters``, in their order there."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{notebook}: expected one cell tagged 'parameters', found {len(tagged)}")
    source = "".join(tagged[0]["source"])
    names = [
        target.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    ]
    return list(dict.fromkeys(names))


def parameters_table(values: Mapping[str, Any], names: Sequence[str], notebook_link: str, columns: int = 2) -> str:
    """MyST Markdown: ``names`` with their ``values`` in ``columns`` name/value pairs per row, then the link.

    The block is wrapped in a container of class ``parameters-in-use`` so that the book's browser
    test can tell this table of inputs from the results that follow it.
    """
    # A "|" inside a value would end its table cell early.
    pairs = [(f"`{name}`", f"`{values[name]!r}`".replace("|", "\\|")) for name in names]
    pairs += [("", "")] * (-len(pairs) % columns)  # pad the last row to full width
    rows = [sum(pairs[i : i + columns], ()) for i in range(0, len(pairs), columns)]
    table = markdown_table(("parameter", "value") * columns, rows)
    return (
        f":::{{container}} parameters-in-use\n**Parameters of this run.** {notebook_link} holds the code; "
        f"rerun it with papermill to change them.\n\n{table}\n:::"
    )


def show_parameters(namespace: Mapping[str, Any], notebook: str) -> None:
    """Show the values ``notebook`` (a name in notebooks/) runs with, after any papermill overrides.

    The names come from the source notebook's parameters cell, so the table lists exactly what
    papermill can change; the link makes the book copy the clean source notebook for download.
    """
    names = parameter_names(NOTEBOOKS / f"{notebook}.ipynb")
    link = f"{{download}}`The notebook <{'/notebooks/' + notebook + '.ipynb'}>`"
    _show_markdown(parameters_table(namespace, names, link))


# -- real-data chapters ------------------------------------------------------------------------

METRIC_COLUMNS = (("clean", "clean"), ("linf", "ℓ∞"), ("l2", "ℓ2"))


def autoattack_cell(run: Any, norm: str) -> str:
    """The stored AutoAttack robust accuracy of ``run`` in ``norm``, with its number of test images."""
    from .run_evaluations import chosen_evaluations

    entry = chosen_evaluations(run).get(("autoattack", norm)) if run is not None else None
    if entry is None:
        return "not evaluated"
    return f"{percent(entry['results']['robust'], digits=2)} ({entry['settings']['subset']['size']:,})"


# An epoch this many times slower than the run's median was stalled by something else on the machine.
STALL_FACTOR = 3


def _epoch_seconds(run: Any) -> list[float]:
    return [h["seconds"] for h in (run.history or []) if h.get("seconds")] if run is not None else []


def seconds_per_epoch(run: Any) -> float | None:
    """The median training time of an epoch of ``run``, from its history (None without one)."""
    seconds = _epoch_seconds(run)
    return statistics.median(seconds) if seconds else None


def results_table(
    runs: dict[str, Any],
    paper_rows: dict[str, dict[str, float]],
    labels: dict[str, str],
    *,
    autoattack: bool = False,
) -> str:
    """Markdown: one row per method, our accuracy beside the paper's for each metric, with the length,
    wall time and median epoch time of our run; with ``autoattack``, two columns give each run's stored AutoAttack
    accuracy (the paper has none). Only the table: a MyST ``table`` directive holds exactly one, so
    what must be said under it comes from :func:`results_notes`."""
    header = ["method"] + [name for _, title in METRIC_COLUMNS for name in (title, "paper")]
    if autoattack:
        header += ["AutoAttack ℓ∞ 8/255", "AutoAttack ℓ2"]
    header += ["epochs", "wall time", "time per epoch"]
    rows = []
    for row, run in runs.items():
        metrics = (run.metrics or {}) if run is not None else {}
        paper = paper_rows.get(row, {})
        cells = [labels.get(row, row)]
        for key, _ in METRIC_COLUMNS:
            cells += [percent(metrics.get(key), digits=2), percent(paper[key], digits=2) if key in paper else "—"]
        if autoattack:
            cells += [autoattack_cell(run, norm) if run is not None else "—" for norm in ("linf", "l2")]
        cells.append(run.params["epochs"] if run is not None else "—")
        cells.append(f"{run.record['wall_seconds'] / 60:.0f} min" if run is not None else "—")
        # The median epoch, unlike the wall time, does not count stalls caused by other processes.
        cost = seconds_per_epoch(run)
        cells.append(f"{cost:.0f} s" if cost is not None else "—")
        rows.append(cells)
    return markdown_table(header, rows)


def results_notes(runs: dict[str, Any], labels: dict[str, str] | None = None, *, autoattack: bool = False) -> str:
    """What a results table's reader must know: the test set(s) behind our numbers, with
    ``autoattack`` how AutoAttack's subset is chosen, and which runs' wall times include stalls."""
    test_sets = sorted({run.metrics["test_set"] for run in runs.values() if run and "test_set" in (run.metrics or {})})
    notes = ["Our numbers are computed on: " + "; ".join(test_sets) + "."] if test_sets else []
    if autoattack:
        notes.append(
            "AutoAttack (standard version) runs on a fixed, seeded subset of the test set, whose size follows "
            "each number; see the gradient-masking chapter."
        )
    for row, run in runs.items():
        seconds = _epoch_seconds(run)  # one read of the history for both statistics
        if not seconds:
            continue
        slowest, typical = max(seconds), statistics.median(seconds)
        if slowest > STALL_FACTOR * typical:
            notes.append(
                f"The wall time of {(labels or {}).get(row, row)} includes stalls: its slowest epoch took "
                f"{slowest:,.0f} s against a median of {typical:,.0f} s, because other work shared the machine."
            )
    return " ".join(notes)


def preset_sentence(scale: str, dataset: str) -> str:
    """The knobs a scale's preset sets, in words."""
    from .config import preset_for
    from .data import SPECS

    preset = preset_for(scale, dataset)
    k = preset.classes_per_image or SPECS[dataset].num_classes
    text = (
        f"At the {scale} scale the ResNet-18 has width {preset.width} (the paper's is 64), training lasts "
        f"{preset.epochs} epochs (the paper's 100), {k} of the {SPECS[dataset].num_classes} target classes are "
        f"sampled per image and step, and adversarial training takes {preset.adversary_steps} PGD steps (7)."
    )
    if not preset.final:
        text += f" This preset is provisional: {preset.note}; no real run uses it yet."
    return text


def cpu_scale_verdict(
    runs: dict[str, Any],
    paper_rows: dict[str, dict[str, float]],
    labels: dict[str, str],
    distance_ceiling: float | None = None,
) -> str:
    """What the CPU-scale rows show about the paper's claim, computed from the stored runs only.

    ``distance_ceiling`` is the accuracy of a classifier that sees only an image's distances to
    the class means (the pilot's MLP, see :func:`cpu_pilot_paragraph`): a class-mean model at or
    below it may be robust the way such a simple classifier is, which says little about PAG."""
    done = {row: run for row, run in runs.items() if run is not None and run.metrics}
    if "vanilla" not in done or not any(row in done for row in PAG_ROWS):
        return (
            "There is no CPU-scale result to discuss yet: the vanilla row and at least one PAG row must have "
            "real runs first."
        )
    vanilla = done["vanilla"].metrics
    parts = [
        f"At the CPU scale the vanilla model reaches {percent(vanilla['clean'])} clean, "
        f"{percent(vanilla['linf'])} under ℓ∞ and {percent(vanilla['l2'])} under ℓ2 PGD-20."
    ]
    for row in PAG_ROWS:
        if row not in done:
            continue
        m = done[row].metrics
        gains = [m[key] - vanilla[key] for key in ("linf", "l2")]
        verdict = "more" if min(gains) > 0 else "not more"
        parts.append(
            f"{labels.get(row, row)}: {percent(m['clean'])} clean, {percent(m['linf'])} ℓ∞, "
            f"{percent(m['l2'])} ℓ2, {verdict} robust than vanilla in both threat models "
            f"(paper at its scale: {percent(paper_rows[row]['clean'])} clean, {percent(paper_rows[row]['linf'])} ℓ∞, "
            f"{percent(paper_rows[row]['l2'])} ℓ2)."
        )
        if row == "class_mean" and distance_ceiling is not None:
            side = "does not exceed" if m["clean"] <= distance_ceiling else "exceeds"
            parts.append(
                f"Its clean accuracy {side} the {percent(distance_ceiling)} of a classifier that sees only the "
                "distances to the class means"
                + (
                    ", so its robustness may be that of such a simple classifier and is weak evidence for PAG."
                    if side == "does not exceed"
                    else "."
                )
            )
    parts += _disagreements(done, paper_rows, labels)
    parts += _students_and_teachers(done, labels)
    parts.append(
        "These are numbers of a reduced protocol: they can support or contradict the direction of the "
        "paper's claim (robustness without adversarial examples), not its figures."
    )
    return " ".join(parts)


def _points(fraction: float) -> str:
    return f"{100 * fraction:.0f}"


def _disagreements(done: dict[str, Any], paper_rows: dict[str, dict[str, float]], labels: dict[str, str]) -> list[str]:
    """Where the CPU-scale rows differ from the paper's in kind, not only in level: what PAG costs
    in clean accuracy against vanilla, and how the PAG rows rank in each threat model."""
    rows = [row for row in PAG_ROWS if row in done and row in paper_rows]
    if not rows or "vanilla" not in paper_rows:
        return []
    ours_cost = [done["vanilla"].metrics["clean"] - done[row].metrics["clean"] for row in rows]
    paper_cost = [paper_rows["vanilla"]["clean"] - paper_rows[row]["clean"] for row in rows]
    parts = [
        f"Against its own vanilla model, PAG training costs {_points(min(ours_cost))} to {_points(max(ours_cost))} "
        f"points of clean accuracy here, where the same rows cost {_points(min(paper_cost))} to "
        f"{_points(max(paper_cost))} points in the paper"
        + (
            ": the largest disagreement, for which the preset's narrow network and short schedule are the "
            "first suspects."
            if max(ours_cost) > 2 * max(paper_cost)
            else "."
        )
    ]
    if len(rows) < 2:
        return parts

    def order(ranking: list[str]) -> str:
        return " > ".join(labels.get(row, row) for row in ranking)

    for key, name in (("linf", "ℓ∞"), ("l2", "ℓ2")):
        ours = sorted(rows, key=lambda row: -done[row].metrics[key])
        theirs = sorted(rows, key=lambda row: -paper_rows[row][key])
        if ours == theirs:
            parts.append(f"Under {name} the rows rank as in the paper ({order(ours)}).")
        else:
            parts.append(f"Under {name} the rows rank {order(ours)}; in the paper, {order(theirs)}.")
    return parts


def _students_and_teachers(done: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """Each RIGD student's robust accuracy beside that of the adversarially trained teacher it distils,
    and the teacher's beside the best model-free row's: RIGD is the paper's upper bound only while its
    teacher is much more robust than what model-free targets already give."""
    parts = []
    for norm, name in (("linf", "ℓ∞"), ("l2", "ℓ2")):
        student, teacher = done.get(f"rigd_{norm}"), done.get(f"adversarial_{norm}")
        if student is None or teacher is None:
            continue
        s, t = student.metrics, teacher.metrics
        parts.append(
            f"Under {name} PGD-20, {labels.get(f'rigd_{norm}', f'rigd_{norm}')}, which never sees an attacked "
            f"image, reaches {percent(s[norm])} against the {percent(t[norm])} of the teacher it distils, at "
            f"{percent(s['clean'])} clean against the teacher's {percent(t['clean'])}."
        )
        model_free = [row for row in MODEL_FREE_SOURCES if row in done]
        if model_free:
            best = max(model_free, key=lambda row: done[row].metrics[norm])
            margin = t[norm] - done[best].metrics[norm]
            parts.append(
                f"The teacher itself is {abs(100 * margin):.1f} points {'above' if margin >= 0 else 'below'} the "
                f"most {name}-robust model-free row ({labels.get(best, best)}, {percent(done[best].metrics[norm])})."
            )
    return parts


# A model-free source trains the row of the same name; RIGD has a row per teacher threat model.
PAG_ROWS = (*MODEL_FREE_SOURCES, "rigd_linf", "rigd_l2")


def _newest_json(results: Path, pattern: str) -> dict[str, Any] | None:
    paths = sorted(results.glob(pattern))
    return json.loads(paths[-1].read_text()) if paths else None


def cpu_pilot_results(dataset: str, results: Path | None = None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The committed pilot results of ``dataset``: (newest throughput, accuracy), each None if absent."""
    from .devices import BENCHMARK_RESULTS

    results = results or BENCHMARK_RESULTS
    return (
        _newest_json(results, f"cpu_pilot-throughput-{dataset}-*.json"),
        _newest_json(results, f"cpu_pilot-accuracy-{dataset}.json"),
    )


def class_mean_distance_ceiling(dataset: str, results: Path | None = None) -> float | None:
    """The pilot's best accuracy on ``dataset`` from the distances to the class means alone, if it measured one."""
    _, accuracy = cpu_pilot_results(dataset, results)
    ceiling = (accuracy or {}).get("class_mean_distance_accuracy")
    return max(ceiling.values()) if ceiling else None


def _duration(seconds: float) -> str:
    """A short duration in words: seconds under two minutes, minutes above."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def cpu_pilot_paragraph(dataset: str, results: Path | None = None) -> str:
    """How the pilot (benchmarks/cpu_pilot.py) measured the choices behind the cpu preset, in words,
    from its committed results for ``dataset``."""
    speed, accuracy = cpu_pilot_results(dataset, results)
    if speed is None or accuracy is None:
        return f"The pilot that chooses the {dataset} cpu preset has no results yet."
    rate = {row["name"]: row["images_per_s"] for row in speed["rows"]}
    widths = sorted({row["width"] for row in speed["rows"]})
    batch = speed["batch"]
    steps = [
        f"{rate[fp32]:.0f} → {rate[fast]:.0f} at width {w}"
        for w in widths
        for fp32, fast in [(f"w{w} k2 b{batch} fp32 loop", f"w{w} k2 b{batch} bf16 cl loop")]
        if fp32 in rate and fast in rate
    ]
    worst_cosine = max(v["cosine_abs_diff"] for v in speed["loss_bf16_vs_fp32"].values())
    text = [
        f"The preset was chosen by a pilot on two CPU cores ({speed['device']}, torch {speed['torch']}). "
        f"A PAG training step with k = 2 at batch {batch} processes, in images per second from float32 to bf16 "
        f"autocast with channels-last, {'; '.join(steps)}; in bf16 the cosine term (a sum over ten classes) "
        f"moves by at most {worst_cosine:.3f} from float32."
    ]
    finished = [r for r in accuracy["runs"] if r["epochs_done"] == r["epochs"] and r["test_accuracy"]]
    for objective in ("cross_entropy", "pag"):
        found = sorted(((r["width"], r) for r in finished if r["objective"] == objective), key=lambda wr: wr[0])
        if found:
            first = found[0][1]
            # Older pilot results did not record lambda; their runs took the paper's, as every run does.
            lam = first.get("lam") or paper.LAMBDA[dataset]["class_mean"]
            label = "vanilla" if objective == "cross_entropy" else f"class mean (k = {first['k']}, λ = {lam:g})"
            parts = [
                f"{percent(r['test_accuracy'][-1])} at width {w} "
                f"({_duration(statistics.median(r['seconds_per_epoch']))} per epoch)"
                for w, r in found
            ]
            text.append(f"After {first['epochs']} epochs, {label} reaches {', '.join(parts)}.")
    if finished:
        text.append(
            "(Median epoch times of the pilot's runs, which at times shared the machine with other work: upper "
            "bounds, where the step throughput above is the clean measure.)"
        )
    ceiling = accuracy.get("class_mean_distance_accuracy")
    if ceiling:
        text.append(
            "A classifier that sees an image only through its ten distances to the class means reaches "
            f"{percent(ceiling['nearest'])} as the nearest mean, {percent(ceiling['linear'])} as a linear model "
            f"and {percent(ceiling['mlp'])} as a small MLP on those distances."
        )
        class_mean = [r["test_accuracy"][-1] for r in finished if r["objective"] == "pag"]
        if class_mean:
            above = max(class_mean) > max(ceiling.values())
            text.append(
                "The pilot's class-mean models "
                + (
                    "pass it, so they use more of the image than those distances."
                    if above
                    else "stay under it, so their accuracy is within what those distances allow."
                )
            )
    return " ".join(text)


def status_sentence(runs: dict[str, Any], chapter: str) -> str:
    """One plain sentence on how much of ``chapter`` rests on real runs."""
    done = [r for r in runs.values() if r is not None]
    if not done:
        return (
            f"No real run of the {chapter} experiments exists yet, so every 'ours' cell reads "
            "'not run' and only the paper's numbers are shown."
        )
    epochs = sorted({r.params["epochs"] for r in done})
    schedule = ", ".join(str(e) for e in epochs)
    rest = "; the others read 'not run'" if len(done) < len(runs) else ""
    return (
        f"{len(done)} of the {len(runs)} rows come from real runs (schedules of {schedule} epochs; "
        f"the paper trains for 100){rest}."
    )


def scales_status(runs_by_scale: dict[str, dict[str, Any]], chapter: str) -> str:
    """:func:`status_sentence` for each scale of a chapter, each introduced by its scale."""
    return " ".join(f"At the {scale} scale: " + status_sentence(runs, chapter) for scale, runs in runs_by_scale.items())


def training_curves(runs: dict[str, Any], labels: dict[str, str]):
    """Test accuracy and training loss per epoch of every stored run; None if there are none."""
    available = {row: run for row, run in runs.items() if run is not None and run.history}
    if not available:
        return None
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for row, run in available.items():
        epochs = [h["epoch"] for h in run.history]
        ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in run.history], label=labels.get(row, row))
        ax_loss.plot(epochs, [h["loss"] for h in run.history], label=labels.get(row, row))
    ax_acc.set(xlabel="epoch", ylabel="clean test accuracy (%)")
    ax_loss.set(xlabel="epoch", ylabel="training loss (Eq. 1)", yscale="log")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pag_grid_figure(runs: dict[str, Any], labels: dict[str, str], class_names: Sequence[str], image: int = 0):
    """For one test image, the large-eps targeted PGD towards every class, one row per run."""
    grids = {}
    for row, run in runs.items():
        grid = load_pag_grid(run.artifacts) if run is not None else None
        if grid is not None:
            grids[row] = grid
    if not grids:
        return None
    stacked = torch.stack([g[min(image, len(g) - 1)] for g in grids.values()])
    return image_grid(
        stacked, row_labels=[labels.get(r, r) for r in grids], column_labels=("input", *class_names), scale=1.2
    )


def training_devices(run: Any) -> list[str]:
    """The devices, shortened and sorted, on which the sessions of ``run`` trained."""
    return sorted({short_device(s["device"]) for s in run.record.get("sessions", [])}) if run is not None else []


def records_table(runs: dict[str, Any], labels: dict[str, str]) -> str:
    """Markdown: the provenance of every stored run behind a chapter."""
    rows = []
    for row, run in runs.items():
        if run is None:
            continue
        record = run.record
        last = record["sessions"][-1]
        devices = training_devices(run)
        rows.append(
            (
                labels.get(row, row),
                f"`{run.name}`",
                last["git"][:12],
                "; ".join(devices),
                last["finished"][:10],
                f"{record['wall_seconds'] / 60:.1f} min",
            )
        )
    if not rows:
        return "No run exists yet, so there is no record to show."
    return markdown_table(("method", "run", "git", "device", "date", "wall time"), rows)


def seed_summary(runs: dict[Any, Any]) -> dict[str, Any] | None:
    """Mean and sample standard deviation of each metric over the stored runs (None if none)."""
    done = [r.metrics for r in runs.values() if r is not None]
    if not done:
        return None
    summary: dict[str, Any] = {"mean": {}, "std": {}, "n": len(done)}
    for key, _ in METRIC_COLUMNS:
        values = [m[key] for m in done]
        summary["mean"][key] = statistics.fmean(values)
        summary["std"][key] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def _triple(values: Mapping[str, float], digits: int = 2) -> str:
    """The three metric columns of ``values`` as points, ``"79.13 / 15.93 / 50.26"``."""
    return " / ".join(f"{100 * values[key]:.{digits}f}" for key, _ in METRIC_COLUMNS)


def seed_verdict(summary: dict[str, Any] | None, reported: dict[str, Any], scale: str, num_classes: int) -> str:
    """How the spread over our seeds at ``scale`` compares with the paper's Table 4, and whether the
    runs fit their labels well enough for that spread to mean what the paper's does."""
    if summary is None or summary["n"] < 2:
        return f"At the {scale} scale fewer than two seeds have complete runs, so there is no spread to compare yet."
    text = [
        f"At the {scale} scale, over {summary['n']} seeds, the standard deviation is {_triple(summary['std'])} "
        f"points (clean / ℓ∞ / ℓ2) against the paper's {_triple(reported['std'])} over {reported['seeds']}, "
        f"around means of {_triple(summary['mean'])} against the paper's {_triple(reported['mean'])}."
    ]
    chance = 1 / num_classes
    if summary["mean"]["clean"] < 2 * chance:
        text.append(
            f"A mean clean accuracy under twice chance ({percent(2 * chance, digits=0)}) says that at this scale the "
            "one-image model hardly fits its labels: its robust accuracy is that of a near-chance classifier, and "
            "its spread measures how far each seed's training gets out of that regime, not the stability that "
            "the paper's Table 4 shows."
        )
    return " ".join(text)


# The direction the paper's Figure 5 reports as λ grows: clean accuracy falls, robust accuracy rises.
LAMBDA_TREND = {"clean": -1, "linf": 1, "l2": 1}


def lambda_verdict(metrics_by_lam: Mapping[float, Mapping[str, float] | None], scale: str) -> str:
    """Whether our class-mean runs at ``scale`` trade clean accuracy for robustness as λ grows, as
    the paper's Figure 5 does, from the smallest to the largest λ > 0 that has a run."""
    done = {lam: m for lam, m in sorted(metrics_by_lam.items()) if lam > 0 and m}
    if len(done) < 2:
        return f"At the {scale} scale fewer than two values of λ have complete runs, so there is no trend to read yet."
    (low, first), *_, (high, last) = done.items()
    changes, agree, peaks = [], [], []
    for key, name in METRIC_COLUMNS:
        changes.append(f"{name} {percent(first[key])} → {percent(last[key])}")
        if (last[key] - first[key]) * LAMBDA_TREND[key] > 0:
            agree.append(name)
        # The ends alone would hide a robust accuracy that peaks in between and falls again.
        best = max(done, key=lambda lam: done[lam][key])
        if LAMBDA_TREND[key] > 0 and best != high:
            peaks.append(f"{name} peaks at λ = {best:g} ({percent(done[best][key])})")
    span = f"At the {scale} scale, from λ = {low:g} to λ = {high:g} ({len(done)} values run): "
    text = span + ", ".join(changes) + "."
    if peaks:
        text += " Robustness does not grow all the way: " + ", ".join(peaks) + "."
    if len(agree) == len(METRIC_COLUMNS):
        return text + " End to end, clean accuracy falls and robustness rises, the trade of the paper's Figure 5."
    differ = [name for _, name in METRIC_COLUMNS if name not in agree]
    return text + (
        " Unlike the paper's Figure 5, where clean accuracy falls and robustness rises, here the change runs "
        f"the other way (or is nil) for {', '.join(differ)}."
    )


def short_device(description: str) -> str:
    """``"cpu: Intel(R) Xeon(R) Processor (2 logical cores, ...)"`` -> ``"CPU: Intel Xeon Processor"``."""
    kind, _, name = description.partition(": ")
    name = name.split(" (")[0].replace("(R)", "").replace("(TM)", "").strip()
    return f"{kind.upper()}: {name}" if name else description


# -- the k study: k of the C target classes sampled per image and step ------------------------------


def k_study_table(runs: dict[int, Any]) -> str:
    """Markdown: per k, the accuracies, the step's cost as seconds per epoch and where it was measured."""
    rows = []
    for k, run in sorted(runs.items()):
        metrics = (run.metrics or {}) if run is not None else {}
        cost = seconds_per_epoch(run)
        devices = training_devices(run)
        rows.append(
            (
                k,
                *(percent(metrics.get(key), digits=2) for key, _ in METRIC_COLUMNS),
                f"{cost:.0f} s" if cost is not None else "—",
                "; ".join(devices) or "—",
            )
        )
    return markdown_table(("k", "clean", "ℓ∞", "ℓ2", "time per epoch", "device"), rows)


def _point_differences(a: Mapping[str, float], b: Mapping[str, float]) -> str:
    """``a - b`` in percentage points, per column of :data:`METRIC_COLUMNS`: ``"-2.0, +0.4, -1.3"``."""
    return ", ".join(_signed_points(100 * (a[key] - b[key])) for key, _ in METRIC_COLUMNS)


def _signed_points(points: float) -> str:
    """``+1.3``, ``-0.4``; a difference that rounds to zero reads ``0.0``, not ``-0.0``."""
    text = f"{points:+.1f}"
    return "0.0" if float(text) == 0 else text


def k_study_verdict(runs: dict[int, Any], vanilla: Any, preset_k: int, num_classes: int) -> str:
    """Whether the preset's k changes what the class-mean runs say, from the stored runs only."""
    done = {k: run.metrics for k, run in runs.items() if run is not None and run.metrics}
    if preset_k not in done or num_classes not in done:
        pending = (
            f"The comparison needs the runs with k = {preset_k} (the preset) and k = {num_classes} (the full sum of "
            f"Eq. (1)); {len(done)} of the {len(runs)} runs exist, so there is no verdict yet."
        )
        others = [k for k in sorted(done) if k != preset_k]
        if preset_k not in done or not others:
            return pending
        # Until the full sum lands, say how far the finished ks are from the preset's, without judging.
        ours = done[preset_k]
        gaps = "; ".join(f"k = {k}: {_point_differences(done[k], ours)}" for k in others)
        return f"{pending} So far, the differences from k = {preset_k} in clean, ℓ∞ and ℓ2 accuracy (points): {gaps}."
    ours, full = done[preset_k], done[num_classes]
    text = [
        f"With k = {preset_k} the class-mean model reaches {percent(ours['clean'])} clean, {percent(ours['linf'])} "
        f"ℓ∞ and {percent(ours['l2'])} ℓ2; with the full sum, {percent(full['clean'])}, {percent(full['linf'])} and "
        f"{percent(full['l2'])} (differences of {_point_differences(ours, full)} points)."
    ]
    if len(done) > 2:
        spans = ", ".join(
            f"{100 * (max(m[key] for m in done.values()) - min(m[key] for m in done.values())):.1f}"
            for key, _ in METRIC_COLUMNS
        )
        text.append(f"Over all {len(done)} values of k (one seed each), clean, ℓ∞ and ℓ2 accuracy span {spans} points.")
    ours_cost, full_cost = seconds_per_epoch(runs[preset_k]), seconds_per_epoch(runs[num_classes])
    if ours_cost and full_cost:
        # Epoch times say what k costs only when both runs trained on the same kind of device.
        same_device = training_devices(runs[preset_k]) == training_devices(runs[num_classes])
        text.append(
            f"An epoch took {ours_cost:.0f} s with k = {preset_k} and {full_cost:.0f} s with the full sum, "
            + (
                f"{full_cost / ours_cost:.1f} times as long."
                if same_device
                else "but on different devices, so the ratio does not measure the price of k."
            )
        )
    if vanilla is not None and vanilla.metrics:
        base = vanilla.metrics
        robust = {k: all(m[key] > base[key] for key in ("linf", "l2")) for k, m in done.items()}
        same = len(set(robust.values())) == 1
        more = [str(k) for k, is_more in sorted(robust.items()) if is_more]
        text.append(
            f"Against the vanilla model of the same scale ({percent(base['linf'])} ℓ∞, {percent(base['l2'])} ℓ2), the "
            f"class-mean model is more robust in both threat models for k = {', '.join(more) or 'none'}"
            + (
                f", so the preset's k = {preset_k} does not change that conclusion."
                if same
                else f", so the conclusion depends on k and the preset's k = {preset_k} must be read with care."
            )
        )
    return " ".join(text)
