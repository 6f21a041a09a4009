"""The results of stored runs as tables: accuracies beside the paper's, records, costs, the
CPU pilot and the k study.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pagcore.book import evidence
from pagcore.book.text import METRIC_COLUMNS, duration, markdown_table, percent, placeholder_table, short_device
from pagcore.config import VIT_DEPTH, VIT_WIDTH, ObjectiveConfig, preset_for
from pagcore.data import SPECS
from pagcore.evaluate.ceiling import load_ceiling
from pagcore.evaluate.stored import chosen_evaluations
from pagcore.paper import reported
from pagcore.paper.models import VIT_PATCH
from pagcore.train.devices import BENCHMARK_RESULTS, CPU_STRATEGY

# An epoch this many times slower than the run's median is read as a likely stall, not as training cost.
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
) -> str:
    """Markdown: one row per method, our accuracy beside the paper's for each metric, with the length,
    wall time and median epoch time of our run. Only the table: a MyST ``table`` directive holds
    exactly one, so what must be said under it comes from :func:`results_notes`."""
    header = ["method"] + [name for _, title in METRIC_COLUMNS for name in (title, "paper")]
    header += ["epochs", "wall time", "time per epoch"]
    rows = []
    for row, run in runs.items():
        metrics = (run.metrics or {}) if run is not None else {}
        paper = paper_rows.get(row, {})
        cells = [labels.get(row, row)]
        for key, _ in METRIC_COLUMNS:
            cells += [percent(metrics.get(key)), percent(paper[key]) if key in paper else "—"]
        cells.append(run.params["epochs"] if run is not None else "—")
        cells.append(f"{run.record['wall_seconds'] / 60:.0f} min" if run is not None else "—")
        # The median epoch, unlike the wall time, is not moved by a few stalled epochs.
        cost = seconds_per_epoch(run)
        cells.append(f"{cost:.0f} s" if cost is not None else "—")
        rows.append(cells)
    return markdown_table(header, rows)


CHANCE_LABEL = "constant classifier (chance)"


def accuracy_table(
    runs: dict[str, Any],
    paper_rows: dict[str, dict[str, float]],
    labels: dict[str, str],
    judgements: dict[str, Any],
    num_classes: int,
) -> str:
    """Markdown: clean and PGD-20 accuracy of every run on its whole test set, each followed by the
    paper's in parentheses where ``paper_rows`` has the row, and the verdict of the book's rule; a
    constant classifier opens the table as the floor every number is read against. Percentages with
    one decimal."""
    # A table with no row in the paper (a later version's architecture, say) has no "(paper)" to announce.
    paper_words = " (paper)" if paper_rows else ""
    header = ["method", *(f"{title}{paper_words}" for _, title in METRIC_COLUMNS), "verdict"]
    chance = evidence.chance_metrics(num_classes)
    rows = [[CHANCE_LABEL, *(percent(chance[key]) for key, _ in METRIC_COLUMNS), "floor"]]
    for row, run in runs.items():
        metrics = (run.metrics or {}) if run is not None else {}
        paper = paper_rows.get(row, {})
        cells = [labels.get(row, row)]
        for key, _ in METRIC_COLUMNS:
            ours = percent(metrics.get(key)) if metrics else "not run"
            cells.append(f"{ours} ({percent(paper[key])})" if key in paper else ours)
        judged = judgements.get(row)
        cells.append(judged.verdict if judged is not None else ("baseline" if row == "vanilla" else "—"))
        rows.append(cells)
    return markdown_table(header, rows)


def stronger_attacks_table(runs: dict[str, Any], labels: dict[str, str]) -> str:
    """Markdown: AutoAttack's robust accuracy of every evaluated run on its seeded test subset, each
    beside the share of the subset's correctly classified images it leaves correct ("kept")."""
    header = ["method", "images", "AA ℓ∞", "kept", "AA ℓ2", "kept"]
    rows = []
    for row, run in runs.items():
        entries = chosen_evaluations(run) if run is not None else {}
        cells, sizes = [labels.get(row, row)], set()
        for norm in evidence.THREAT_METRICS:
            entry = entries.get(("autoattack", norm))
            if entry is None:
                cells += ["not run", "—"]
                continue
            results = entry["results"]
            sizes.add(entry["settings"]["subset"]["size"])
            kept = evidence.robust_among_correct(results["robust"], results["clean"])
            cells += [percent(results["robust"]), percent(kept)]
        if not sizes:
            continue
        cells.insert(1, " / ".join(f"{n:,}" for n in sorted(sizes)))
        rows.append(cells)
    return markdown_table(header, rows) if rows else placeholder_table(header, "no run evaluated with AutoAttack yet")


def cost_table(runs: dict[str, Any], labels: dict[str, str]) -> str:
    """Markdown: each run's schedule and median epoch, which unlike the wall time of
    :func:`records_table` is not moved by a few stalled epochs."""
    rows = []
    for row, run in runs.items():
        if run is None:
            continue
        cost = seconds_per_epoch(run)
        rows.append((labels.get(row, row), run.params["epochs"], f"{cost:.0f} s" if cost is not None else "—"))
    if not rows:
        return "No run exists yet, so there is no cost to show."
    return markdown_table(("method", "epochs", "median epoch"), rows)


def results_notes(runs: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """What a results table's reader must know: the test set(s) behind our numbers, and which runs'
    wall times include stalls."""
    test_sets = sorted({run.metrics["test_set"] for run in runs.values() if run and "test_set" in (run.metrics or {})})
    notes = ["Our numbers are computed on: " + "; ".join(test_sets) + "."] if test_sets else []
    for row, run in runs.items():
        seconds = _epoch_seconds(run)  # one read of the history for both statistics
        if not seconds:
            continue
        slowest, typical = max(seconds), statistics.median(seconds)
        if slowest > STALL_FACTOR * typical:
            notes.append(
                f"The wall time of {(labels or {}).get(row, row)} likely includes stalls: its slowest epoch took "
                f"{slowest:,.0f} s against a median of {typical:,.0f} s."
            )
    return " ".join(notes)


def preset_sentence(scale: str, dataset: str) -> str:
    """The knobs a scale's preset sets, in words."""

    preset = preset_for(scale, dataset)
    k = preset.classes_per_image or SPECS[dataset].num_classes
    text = (
        f"At the {scale} scale the ResNet-18 has width {preset.width} (the paper's is 64), training lasts "
        f"{preset.epochs} epochs (the paper's 100), {k} of the {SPECS[dataset].num_classes} target classes are "
        f"sampled per image and step, and adversarial training takes {preset.adversary_steps} PGD steps (the "
        f"paper scale takes Madry et al.'s {preset_for('paper', dataset).adversary_steps})."
    )
    if not preset.final:
        text += f" This preset is provisional: {preset.note}; no real run uses it yet."
    return text


def resolved_knobs(dataset: str, scales: Sequence[str]) -> dict[str, str]:
    """What the knobs a scale sets (epochs, width, k, the ViT's width) resolve to on ``dataset``, per scale, in words:
    for a parameters table whose values are None ("each scale's")."""
    presets = {scale: preset_for(scale, dataset) for scale in scales}
    num_classes = SPECS[dataset].num_classes

    def per_scale(value) -> str:
        return "; ".join(f"{scale}: {value(preset)}" for scale, preset in presets.items())

    return {
        "epochs": per_scale(lambda p: p.epochs),
        "width": per_scale(lambda p: p.width),
        "classes_per_image": per_scale(lambda p: p.classes_per_image or num_classes),
        "pool_size": f"{ObjectiveConfig.pool_size:,} per class",
        "vit_width": "; ".join(f"{scale}: {VIT_WIDTH[scale]}" for scale in scales),
    }


def _newest_json(results: Path, pattern: str) -> dict[str, Any] | None:
    paths = sorted(results.glob(pattern))
    return json.loads(paths[-1].read_text()) if paths else None


def cpu_pilot_results(dataset: str, results: Path | None = None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The committed pilot results of ``dataset``: (newest throughput, accuracy), each None if absent."""

    results = results or BENCHMARK_RESULTS
    return (
        # The date follows the dataset directly: a ViT pilot's files (-vit<depth>-) are not the ResNet's.
        _newest_json(results, f"cpu_pilot-throughput-{dataset}-[0-9]*.json"),
        _newest_json(results, f"cpu_pilot-accuracy-{dataset}.json"),
    )


def class_mean_distance_ceiling(dataset: str, measurements: Path | None = None) -> float | None:
    """The best accuracy on ``dataset`` from the distances to the class means alone, from its recorded
    measurement (``python -m pagcore ceiling``); None if it has not been measured."""
    record = load_ceiling(dataset, measurements)
    return max(record["accuracy"].values()) if record else None


def _finished(accuracy: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in accuracy["runs"] if r["epochs_done"] == r["epochs"] and r["test_accuracy"]]


def _pilot_accuracy(finished: Sequence[Mapping[str, Any]], dataset: str) -> list[str]:
    """Sentences: per objective, the clean accuracy the pilot's finished runs reach at each width."""
    text = []
    for objective in ("cross_entropy", "pag"):
        found = sorted(((r["width"], r) for r in finished if r["objective"] == objective), key=lambda wr: wr[0])
        if found:
            first = found[0][1]
            # A pilot result without lambda trained with the paper's, as every run does.
            lam = first.get("lam") or reported.LAMBDA[dataset]["class_mean"]
            label = "vanilla" if objective == "cross_entropy" else f"class mean (k = {first['k']}, λ = {lam:g})"
            parts = [
                f"{percent(r['test_accuracy'][-1])} at width {w} "
                f"({duration(statistics.median(r['seconds_per_epoch']))} per epoch)"
                for w, r in found
            ]
            text.append(f"After {first['epochs']} epochs, {label} reaches {', '.join(parts)}.")
    if finished:
        text.append(
            "(Median epoch times of the pilot's runs, which at times shared the machine with other work: upper "
            "bounds, where the step throughput above is the clean measure.) The pilot's runs are stored apart from "
            "the book's and only choose the preset: they are not results, and the book's own runs at the chosen "
            "width, evaluated as every result is, give the accuracies the chapters report."
        )
    return text


def vit_pilot_paragraph(dataset: str = "cifar10", results: Path | None = None) -> str:
    """How the pilot measured the ViT of the cpu scale, in words, from its committed results: the step
    throughput of vanilla and of PAG (k = 2) at each width, as the runs take the step (bf16 autocast,
    the CPU's gradient strategy), the accuracy of vanilla at each width, and the width and depth the
    cpu scale takes."""
    results = results or BENCHMARK_RESULTS
    depth = VIT_DEPTH["cpu"]
    speed = _newest_json(results, f"cpu_pilot-throughput-{dataset}-vit{depth}-*.json")
    accuracy = _newest_json(results, f"cpu_pilot-accuracy-{dataset}-vit{depth}.json")
    if speed is None or accuracy is None:
        return f"The pilot that chooses the ViT of the cpu scale has no results yet for {SPECS[dataset].title}."
    rate = {
        (row["width"], row["k"]): row["images_per_s"]
        for row in speed["rows"]
        if row["bf16"] and row["strategy"] == CPU_STRATEGY
    }
    steps = [
        f"{rate[(w, 0)]:.0f} vanilla and {rate[(w, 2)]:.0f} PAG images per second at width {w}"
        for w in sorted({w for w, _ in rate})
        if (w, 0) in rate and (w, 2) in rate
    ]
    text = [
        f"The ViT of the cpu scale keeps the authors' patches ({VIT_PATCH[dataset]} pixels a side on "
        f"{SPECS[dataset].title}) and class token, with {depth} blocks instead of {VIT_DEPTH['paper']}: a depth "
        f"fixed by hand to fit the budget, at which the pilot measured the step on the same two cores "
        f"({speed['device']}) and chose the width. A training step at batch {speed['batch']} in bf16 autocast, "
        f"with the PAG term's gradients taken one class at a time (the {CPU_STRATEGY} strategy the runs use on "
        f"CPU, k = 2), processes {'; '.join(steps)}."
    ]
    text += _pilot_accuracy(_finished(accuracy), dataset)
    text.append(f"The cpu scale takes width {VIT_WIDTH['cpu']}.")
    return " ".join(text)


def cpu_pilot_paragraph(dataset: str, results: Path | None = None, measurements: Path | None = None) -> str:
    """How the pilot (benchmarks/cpu_pilot.py) measured the choices behind the cpu preset, in words,
    from its committed results for ``dataset``, with the recorded distance ceiling of class mean."""
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
    finished = _finished(accuracy)
    text += _pilot_accuracy(finished, dataset)
    record = load_ceiling(dataset, measurements)
    if record:
        ceiling = record["accuracy"]
        text.append(
            "A classifier that sees an image only through its ten distances to the class means reaches "
            f"{percent(ceiling['nearest'])} as the nearest mean, {percent(ceiling['linear'])} as a linear model "
            f"and {percent(ceiling['mlp'])} as a small MLP on those distances (`python -m pagcore ceiling`, "
            f"recorded {record['finished'][:10]}, {record['wall_seconds']:.0f} s on {short_device(record['device'])})."
        )
        class_mean = [r["test_accuracy"][-1] for r in finished if r["objective"] == "pag"]
        if class_mean:
            above = max(class_mean) > max(ceiling.values())
            text.append(
                "The pilot's class-mean models "
                + (
                    "exceed all three classifiers of the distances to the class means."
                    if above
                    else "stay under the best of them, so their accuracy is within what those distances allow."
                )
            )
    return " ".join(text)


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


def noise_table(noises: Mapping[str, evidence.Noise | None], labels: dict[str, str]) -> str:
    """Markdown, one table for every scale: each measured row's seed spread (standard deviation, in
    points) per metric, and which spread the rule gives that row; per scale a last row for every row
    without seeds of its own. Scales where nothing was measured are left out."""

    def cells(spread: dict[str, float]) -> list[str]:
        return [f"{100 * spread.get(key, 0.0):.1f}" for key, _ in METRIC_COLUMNS]

    header = ("scale", "row", "seeds", *(f"{name} (points)" for _, name in METRIC_COLUMNS), "spread the rule uses")
    rows = []
    for scale, noise in noises.items():
        if noise is None:
            continue
        rows += [
            (
                scale,
                labels.get(row, row),
                noise.seeds[row],
                *cells(spread),
                "its own" if row in noise.own else "the widest (too few seeds)",
            )
            for row, spread in noise.spreads.items()
        ]
        widest = {key: noise.widest(key) for key, _ in METRIC_COLUMNS}
        rows.append((scale, "any other row", "—", *cells(widest), "the widest"))
    if not rows:
        return placeholder_table(header, "no row has two seeds yet")
    return markdown_table(header, rows)


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
                *(percent(metrics.get(key)) for key, _ in METRIC_COLUMNS),
                f"{cost:.0f} s" if cost is not None else "—",
                "; ".join(devices) or "—",
            )
        )
    return markdown_table(("k", "clean", "ℓ∞", "ℓ2", "time per epoch", "device"), rows)
