"""The chapters' table of parameters in use."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from pagcore.book import evidence, tables, text, verdicts
from pagcore.config import VIT_DEPTH
from pagcore.train.devices import CPU_STRATEGY


def write_notebook(path, parameters_source: str, tagged: int = 1):
    cells = [nbformat.v4.new_code_cell(parameters_source) for _ in range(tagged)]
    for cell in cells:
        cell.metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=cells + [nbformat.v4.new_code_cell("x = 1")]), path)
    return path


def test_parameter_names_come_from_the_parameters_cell_in_order(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", "# comment\nseeds = [0, 1]\nlam = 0.4  # weight\nseeds = [2]\n")
    assert text.parameter_names(path) == ["seeds", "lam"]


def test_parameter_names_needs_exactly_one_parameters_cell(tmp_path):
    with pytest.raises(ValueError, match="found 2"):
        text.parameter_names(write_notebook(tmp_path / "nb.ipynb", "a = 1", tagged=2))


def test_parameters_table_pairs_names_with_their_values_and_links_the_notebook():
    table = text.parameters_table({"a": 1, "b": "x|y", "c": None, "d": [1, 2]}, ["a", "b", "c", "d"], "LINK", columns=3)
    lines = table.splitlines()
    assert lines[0] == ":::{container} parameters-in-use" and lines[-1] == ":::"
    assert "LINK" in lines[1]
    rows = [line for line in lines if line.startswith("| `")]
    assert rows[0] == "| `a` | `1` | `b` | `'x\\|y'` | `c` | `None` |"
    assert rows[1] == "| `d` | `[1, 2]` |  |  |  |  |", "the last row is padded to full width"


def test_every_chapter_notebook_lists_its_parameters():
    for path in sorted(text.NOTEBOOKS.glob("*.ipynb")):
        assert text.parameter_names(path), path.name


def test_parameters_table_has_two_pairs_per_row_by_default():
    rows = [
        line
        for line in text.parameters_table({"a": 1, "b": 2, "c": 3}, "abc", "LINK").splitlines()
        if line.startswith("| `")
    ]
    assert rows == ["| `a` | `1` | `b` | `2` |", "| `c` | `3` |  |  |"]
    # One parameter alone takes one pair of columns, not a second pair left empty.
    single = text.parameters_table({"a": 1}, "a", "LINK").splitlines()
    assert "| `a` | `1` |" in single and "| parameter | value |" in single


# -- the cpu preset's pilot and the CPU-scale verdict -------------------------------------------------


def write_pilot(results, dataset="cifar10", **run_fields):  # the figures are made up: a test of the wording

    rows = [
        {"name": f"w{w} k2 b64 {mode} loop", "width": w, "images_per_s": rate}
        for w, fp32, fast in ((8, 392.0, 483.0), (16, 199.0, 298.0))
        for mode, rate in (("fp32", fp32), ("bf16 cl", fast))
    ]
    speed = {
        "device": "cpu: test",
        "batch": 64,
        "torch": "2.x",
        "rows": rows,
        "loss_bf16_vs_fp32": {"w8 k2": {"cosine_abs_diff": 0.011}, "w16 k2": {"cosine_abs_diff": 0.004}},
    }
    run = {"objective": "pag", "width": 8, "epochs": 2, "epochs_done": 2, "test_accuracy": [0.2, 0.318], "k": 2}
    run.update(run_fields)
    accuracy = {
        "dataset": dataset,
        "runs": [
            {**run, "seconds_per_epoch": [100.0, 110.0]},
            {**run, "objective": "cross_entropy", "test_accuracy": [0.5, 0.826], "seconds_per_epoch": [30.0, 30.0]},
            {**run, "width": 16, "epochs_done": 1, "test_accuracy": [0.25], "seconds_per_epoch": [170.0]},
        ],
    }
    (results / f"cpu_pilot-throughput-{dataset}-2026-01-01.json").write_text(json.dumps(speed))
    (results / f"cpu_pilot-accuracy-{dataset}.json").write_text(json.dumps(accuracy))


def test_pilot_paragraph_reads_the_committed_pilot_results(tmp_path):
    write_pilot(tmp_path)
    text = tables.cpu_pilot_paragraph("cifar10", tmp_path, tmp_path / "no-measurements")
    assert "392 → 483 at width 8; 199 → 298 at width 16" in text
    assert "at most 0.011" in text
    assert "vanilla reaches 82.6% at width 8 (30 s per epoch)" in text
    assert "class mean (k = 2, λ = 0.4) reaches 31.8% at width 8 (105 s per epoch)" in text
    assert "25.0%" not in text  # unfinished runs are left out
    assert "distances to the class means" not in text  # no recorded ceiling in tmp_path
    measurements = tmp_path / "measurements"
    measurements.mkdir()
    ceiling = {"accuracy": {"nearest": 0.271, "linear": 0.308, "mlp": 0.425}, "finished": "2026-01-01T00:00:00"}
    ceiling.update(wall_seconds=12.0, device="cpu: AMD EPYC (2 cores)")
    for dataset in ("cifar10", "stl10"):
        (measurements / f"class_mean_distance_ceiling-{dataset}.json").write_text(json.dumps(ceiling))
    text = tables.cpu_pilot_paragraph("cifar10", tmp_path, measurements)
    assert "27.1% as the nearest mean" in text and "42.5% as a small MLP" in text
    assert "class-mean models stay under the best of them" in text  # 31.8% < 42.5%
    assert tables.class_mean_distance_ceiling("cifar10", measurements) == 0.425
    assert tables.class_mean_distance_ceiling("stl10", tmp_path / "no-measurements") is None
    assert "stl10 cpu preset has no results yet" in tables.cpu_pilot_paragraph("stl10", tmp_path)
    write_pilot(tmp_path, "stl10", k=1, lam=0.2, test_accuracy=[0.2, 0.5])
    text = tables.cpu_pilot_paragraph("stl10", tmp_path, measurements)
    assert "class mean (k = 1, λ = 0.2)" in text  # read from the runs
    assert "class-mean models exceed all three classifiers" in text  # 50.0% > 42.5%
    assert "has no results yet" in tables.cpu_pilot_paragraph("cifar10", tmp_path / "absent")


class StoredRun:
    path = Path("/nonexistent-run")  # no stored evaluations
    params = {"dataset": "cifar10"}

    def __init__(self, clean, linf, l2):
        self.metrics = {"clean": clean, "linf": linf, "l2": l2, "test_images": 10_000}


NOISE = evidence.Noise(
    spreads={"one_image": {"clean": 0.02, "linf": 0.025, "l2": 0.025}},
    seeds={"one_image": 3},
    measured_on="test",
    own=frozenset({"one_image"}),
)


def judged(runs, failed=()):
    """The rule applied to made-up runs: only PGD-20, and the checklist with ``failed`` checks."""
    vanilla = runs["vanilla"].metrics

    def numbers(m):
        return {("pgd20", n): evidence.Measured(m[n], m["test_images"]) for n in ("linf", "l2")}

    return {
        row: evidence.judge(
            row,
            run.metrics["clean"],
            numbers(run.metrics),
            numbers(vanilla),
            noise=NOISE,
            num_classes=10,
            failed_checks=list(failed),
        )
        for row, run in runs.items()
        if row in verdicts.PAG_ROWS
    }


def test_cpu_verdict_applies_the_rule_and_weighs_class_mean_against_the_distance_ceiling():
    from pagcore.paper import reported

    runs = {"vanilla": StoredRun(0.83, 0.0, 0.02), "class_mean": StoredRun(0.32, 0.18, 0.25)}
    low = verdicts.cpu_scale_verdict(runs, reported.TABLES["cifar10"], {}, judged(runs), NOISE, distance_ceiling=0.425)
    assert "class_mean (32.0% clean, 18.0% ℓ∞, 25.0% ℓ2): **unchecked**" in low  # PGD-20 only
    assert "does not exceed the 42.5%" in low
    masked = verdicts.cpu_scale_verdict(runs, reported.TABLES["cifar10"], {}, judged(runs, ["black_box"]), NOISE)
    assert "**masking suspected**: fails the black-box check" in masked
    runs["class_mean"] = StoredRun(0.15, 0.14, 0.15)
    chance = verdicts.cpu_scale_verdict(runs, reported.TABLES["cifar10"], {}, judged(runs), NOISE, 0.425)
    assert "near chance" in chance and "**evidence**" not in chance
    runs["class_mean"] = StoredRun(0.60, 0.1, 0.3)
    high = verdicts.cpu_scale_verdict(runs, reported.TABLES["cifar10"], {}, judged(runs), NOISE, 0.425)
    assert "distances" not in high
    assert "no CPU-scale result" in verdicts.cpu_scale_verdict(
        {"vanilla": runs["vanilla"]}, reported.TABLES["cifar10"], {}, {}, NOISE
    )


def test_cpu_verdict_ranks_only_rows_the_noise_tells_apart():
    from pagcore.paper import reported

    runs = {
        "vanilla": StoredRun(0.82, 0.0, 0.001),
        "one_image": StoredRun(0.20, 0.16, 0.25),
        "class_mean": StoredRun(0.32, 0.19, 0.27),
        "nearest_neighbor": StoredRun(0.63, 0.02, 0.39),
    }
    text = verdicts.cpu_scale_verdict(runs, reported.TABLES["cifar10"], {}, judged(runs), NOISE)
    # Paper: vanilla 93.61, PAG rows 79.46-81.41 clean (12-14 points); ours 19-62 points.
    assert "costs 19 to 62 points of clean accuracy here, where the same rows cost 12 to 14 points" in text
    assert "more than twice the paper's largest cost" in text
    # 19 and 16 points are within a 5-point noise of each other, 2 is not.
    assert (
        "Among the PAG rows under ℓ∞ PGD-20 here, class_mean is above nearest_neighbor, one_image above "
        "nearest_neighbor; no other pair is told apart by the noise."
    ) in text
    assert (
        "Among the PAG rows under ℓ2 PGD-20 here, nearest_neighbor is above class_mean and one_image; no other pair"
        in text
    )
    # The paper's one image and class mean, 0.9 points apart under l2, are not ranked by its own spread.
    assert (
        "In the paper, judged by its own seed spread (Table 4), class_mean is above nearest_neighbor, one_image" in text
    )
    assert "Among the PAG rows" not in verdicts.cpu_scale_verdict(
        runs, reported.TABLES["cifar10"], {}, judged(runs), None
    )
    # On STL-10 the paper measured no spread of its own: its CIFAR-10 one is borrowed, and the text says so.
    for run in runs.values():
        run.params = {"dataset": "stl10"}
    stl = verdicts.cpu_scale_verdict(runs, reported.TABLES["stl10"], {}, judged(runs), NOISE)
    assert "judged by the seed spread it measures on CIFAR-10 (Table 4), since it has none on STL-10" in stl
    # The score-based row is judged with the others but, having no number in the paper, is never ranked
    # against it: the comparison with the paper stays on the paper's rows.
    runs["score"] = StoredRun(0.34, 0.12, 0.24)
    with_score = verdicts.cpu_scale_verdict(runs, reported.TABLES["cifar10"], {"score": "SBG"}, judged(runs), NOISE)
    assert "- SBG (34.0% clean, 12.0% ℓ∞, 24.0% ℓ2): **" in with_score
    assert "costs 19 to 62 points of clean accuracy here" in with_score  # 82 - 34 = 48 would not change it
    assert "SBG is" not in with_score and "and SBG" not in with_score
    del runs["score"]
    runs["rigd_linf"] = StoredRun(0.55, 0.25, 0.40)
    runs["adversarial_linf"] = StoredRun(0.63, 0.31, 0.46)
    with_teacher = verdicts.cpu_scale_verdict(
        runs, reported.TABLES["cifar10"], {"rigd_linf": "RIGD ℓ∞"}, judged(runs), NOISE
    )
    assert (
        "Under ℓ∞ PGD-20, RIGD ℓ∞, which never sees an attacked image, reaches 25.0% against the 31.0% of the"
        " teacher it distils, at 55.0% clean against the teacher's 63.0%."
    ) in with_teacher
    # The widest ℓ∞ spread, 2.5 points, on both rows: 2 × √(2 × 2.5² + sampling) ≈ 7.1 points, below the gap.
    assert re.search(
        r"The teacher itself is 12\.0 points above the highest ℓ∞ accuracy of the model-free rows \(19\.0%\), "
        r"beyond the noise \(a gap must exceed 7\.\d points\)\.",
        with_teacher,
    )


def test_cpu_verdict_checks_what_vanilla_keeps_under_pgd_against_autoattack(tmp_path):
    from pagcore.paper import reported

    vanilla = StoredRun(0.61, 0.0, 0.09)
    vanilla.path = tmp_path
    (tmp_path / "evaluations").mkdir()
    entry = {
        "name": "autoattack",
        "settings": {"norm": "l2", "budgets": "real", "subset": {"size": 100, "seed": 0}},
        "results": {"robust": 0.03, "clean": 0.61},
    }
    (tmp_path / "evaluations" / "autoattack-l2-x.json").write_text(json.dumps(entry))
    runs = {"vanilla": vanilla, "class_mean": StoredRun(0.32, 0.18, 0.25)}
    text = verdicts.cpu_scale_verdict(runs, reported.TABLES["stl10"], {}, judged(runs), NOISE)
    assert "Vanilla keeps" not in text  # without PGD-20 on the same subset there is nothing to compare
    on_subset = {**entry, "name": "pgd20", "results": {"robust": 0.09, "clean": 0.61}}
    (tmp_path / "evaluations" / "pgd20-l2-x.json").write_text(json.dumps(on_subset))
    text = verdicts.cpu_scale_verdict(runs, reported.TABLES["stl10"], {}, judged(runs), NOISE)
    # 6 points on 100 images is under twice its sampling error (6.7 points): no reading.
    assert (
        "Vanilla keeps 9.0% of the whole test set under PGD-20 ℓ2; on 100 of those images it keeps 9.0% under"
        " PGD-20 and 3.0% under AutoAttack: AutoAttack breaks 6 of these 100 images that PGD-20 leaves, a gap of 6.0 "
        "points, too few images to say how far PGD-20 overstates vanilla on the whole test set."
    ) in text
    assert "under PGD-20 ℓ∞ but" not in text  # nothing left to explain

    def on(images: int, pgd: float, robust: float) -> str:
        for name, value, stored in (("pgd20", pgd, on_subset), ("autoattack", robust, entry)):
            stored["settings"]["subset"]["size"] = images
            stored["results"]["robust"] = value
            (tmp_path / "evaluations" / f"{name}-l2-x.json").write_text(json.dumps(stored))
        return verdicts.cpu_scale_verdict(runs, reported.TABLES["stl10"], {}, judged(runs), NOISE)

    # On 1,000 images the same gap is beyond the noise, and more than half of what PGD-20 leaves.
    assert "AutoAttack takes most of what PGD-20 leaves" in on(1000, 0.09, 0.03)
    assert "AutoAttack takes part of what PGD-20 leaves, beyond sampling error" in on(1000, 0.09, 0.06)
    assert "AutoAttack leaves at least as many of these 1,000 images as PGD-20 does." in on(1000, 0.03, 0.05)
    # PGD-20 on another subset: the gap would mix the two subsets, so nothing is read.
    elsewhere = {**on_subset, "settings": {**on_subset["settings"], "subset": {"size": 1000, "seed": 1}}}
    (tmp_path / "evaluations" / "pgd20-l2-x.json").write_text(json.dumps(elsewhere))
    assert "Vanilla keeps" not in verdicts.cpu_scale_verdict(runs, reported.TABLES["stl10"], {}, judged(runs), NOISE)


def test_results_table_gives_length_wall_time_and_median_epoch(tmp_path):
    class Run:
        path = tmp_path
        metrics = {"clean": 0.8, "linf": 0.1, "l2": 0.3}
        params = {"epochs": 20}
        record = {"wall_seconds": 4620}
        history = [{"seconds": 107.0}, {"seconds": 1427.0}, {"seconds": 105.0}]

    table = tables.results_table({"class_mean": Run()}, {}, {})
    assert len(table.splitlines()) == 3  # one table only: a MyST table directive accepts nothing else
    assert table.splitlines()[-1].endswith("| 20 | 77 min | 107 s |")  # the median epoch ignores a stalled one
    Run.metrics = {**Run.metrics, "test_set": "all 10,000 CIFAR-10 test images"}
    notes = tables.results_notes({"class_mean": Run(), "vanilla": None})
    assert notes.startswith("Our numbers are computed on: all 10,000 CIFAR-10 test images.")
    stalled = tables.results_notes({"class_mean": Run()}, {"class_mean": "Class Mean"})
    assert "Class Mean likely includes stalls: its slowest epoch took 1,427 s against a median of 107 s" in stalled
    Run.history = [{"seconds": 107.0}, {"seconds": 300.0}, {"seconds": 105.0}]
    assert "stalls" not in tables.results_notes({"class_mean": Run()})
    assert tables.results_notes({"vanilla": None}) == ""


def test_accuracy_table_opens_with_the_chance_floor_and_gives_each_rows_verdict():
    from pagcore.paper import reported

    runs = {"vanilla": StoredRun(0.83, 0.0, 0.02), "class_mean": StoredRun(0.32, 0.18, 0.25), "one_image": None}
    done = {row: run for row, run in runs.items() if run is not None}
    table = tables.accuracy_table(runs, reported.TABLES["cifar10"], {}, judged(done), 10)
    lines = table.splitlines()
    assert lines[2] == "| constant classifier (chance) | 10.0% | 10.0% | 10.0% | floor |"
    assert lines[3].startswith("| vanilla | 83.0% (93.6%) |") and lines[3].endswith("| baseline |")
    assert lines[4].endswith("| unchecked |")  # PGD-20 only: AutoAttack and the checklist have not run
    assert lines[5] == "| one_image | not run (79.5%) | not run (16.6%) | not run (49.7%) | — |"
    assert lines[0].startswith("| method | clean (paper) |")
    # Rows the paper never ran (the ViT's) announce no paper numbers.
    assert tables.accuracy_table(runs, {}, {}, {}, 10).startswith("| method | clean | ℓ∞ | ℓ2 | verdict |")


def test_stronger_attacks_table_gives_autoattack_and_the_share_of_correct_points_kept(tmp_path):

    class Run:
        path = tmp_path

    (tmp_path / "evaluations").mkdir()
    entry = {
        "name": "autoattack",
        "settings": {"norm": "l2", "budgets": "real", "subset": {"size": 1000, "seed": 0}},
        "results": {"robust": 0.25, "clean": 0.5},
    }
    (tmp_path / "evaluations" / "autoattack-l2-x.json").write_text(json.dumps(entry))
    table = tables.stronger_attacks_table({"class_mean": Run(), "vanilla": None}, {})
    assert table.splitlines()[-1] == "| class_mean | 1,000 | not run | — | 25.0% | 50.0% |"
    # Still a table, since a table directive around its glue takes exactly one.
    assert "| no run evaluated with AutoAttack yet | — |" in tables.stronger_attacks_table({"vanilla": None}, {})


class TimedRun(StoredRun):
    def __init__(self, clean, linf, l2, epoch_seconds=(100.0, 120.0, 110.0), device="cpu: AMD EPYC (2 cores)"):
        super().__init__(clean, linf, l2)
        self.history = [{"seconds": s} for s in epoch_seconds]
        self.record = {"sessions": [{"device": device}]}


def test_k_study_says_whether_the_presets_k_changes_the_conclusion():
    vanilla = TimedRun(0.83, 0.0, 0.02)
    runs = {1: TimedRun(0.30, 0.16, 0.22, (50.0,)), 2: TimedRun(0.32, 0.18, 0.25), 5: None}
    runs[10] = TimedRun(0.35, 0.2, 0.3)
    table = tables.k_study_table(runs)
    assert table.splitlines()[2].startswith("| 1 | 30.0% |") and "| 110 s | CPU: AMD EPYC |" in table
    assert "| 5 | not run | not run | not run | — | — |" in table
    same = verdicts.k_study_verdict(runs, vanilla, 2, 10, NOISE)
    assert "differences of -3.0, -2.0, -5.0 points" in same and "does not change that conclusion" in same
    assert "An epoch took 110 s with k = 2 and 110 s with the full sum, 1.0 times as long." in same
    assert "Over all 3 values of k (one seed each), clean, ℓ∞ and ℓ2 accuracy span 5.0, 4.0, 8.0 points." in same
    assert "no k differs from k = 2 beyond the noise in clean, ℓ∞ or ℓ2 accuracy" in same
    assert "Judged with the widest seed spread measured (clean 2.0, ℓ∞ 2.5, ℓ2 2.5 points), no k differs" in same
    # A k that keeps no more than chance under ℓ∞ is not more robust, however far above vanilla it lies.
    at_chance = {**runs, 1: TimedRun(0.30, 0.08, 0.22, (50.0,))}
    low = verdicts.k_study_verdict(at_chance, vanilla, 2, 10, NOISE)
    assert "fitting its labels, for k = 2, 10 (PGD-20 only" in low and "so the conclusion depends on k" in low
    # A row's own spread, narrower than the widest, tells apart a gap that the widest would hide.
    wide = evidence.Noise(
        spreads={
            "one_image": {"clean": 0.05, "linf": 0.05, "l2": 0.05},
            "nearest_neighbor": dict.fromkeys(("clean", "linf", "l2"), 0.001),
        },
        seeds={"one_image": 3, "nearest_neighbor": 3},
        measured_on="test",
        own=frozenset({"one_image", "nearest_neighbor"}),
    )
    near = {1: TimedRun(0.35, 0.18, 0.20), 2: runs[2], 10: TimedRun(0.40, 0.18, 0.25)}
    own = verdicts.k_study_verdict(near, vanilla, 2, 10, wide, model="nearest-neighbour", row="nearest_neighbor")
    assert (
        "Each k is one run of one seed, taken to vary over seeds as the nearest-neighbour model does at k = 2, "
        "whose spread 3 seeds measure (the runs differ in k alone). Judged with that spread, beyond the noise " in own
    )
    assert "k = 1 is above k = 2 in clean accuracy, k = 1 is below k = 2 in ℓ2 accuracy and k = 10 is above" in own
    assert "so at this scale k moves clean and ℓ2 accuracy but not ℓ∞ accuracy (one seed per k)." in own
    assert "no k differs" in verdicts.k_study_verdict(near, vanilla, 2, 10, wide, row="class_mean")
    runs[10] = TimedRun(0.35, 0.2, 0.3, (330.0,))
    longer = verdicts.k_study_verdict(runs, vanilla, 2, 10, NOISE)
    assert "110 s with k = 2 and 330 s with the full sum, 3.0 times as long" in longer
    runs[10] = TimedRun(0.35, 0.2, 0.3, (33.0,), device="cuda: NVIDIA H100 80GB HBM3")
    assert "on different devices" in verdicts.k_study_verdict(runs, vanilla, 2, 10, NOISE)
    runs[1] = TimedRun(0.30, 0.0, 0.01)
    collapsed = verdicts.k_study_verdict(runs, vanilla, 2, 10, NOISE)
    assert "depends on k" in collapsed
    assert "beyond the noise k = 1 is below k = 2 in ℓ∞ and ℓ2 accuracy, so" in collapsed
    assert "so at this scale k moves ℓ∞ and ℓ2 accuracy but not clean accuracy (one seed per k)." in collapsed
    assert "no verdict yet" in verdicts.k_study_verdict({2: runs[2], 10: None}, vanilla, 2, 10, NOISE)
    partial = verdicts.k_study_verdict({1: runs[1], 2: runs[2], 10: None}, vanilla, 2, 10, NOISE)
    assert "no verdict yet" in partial and "accuracy (points): k = 1: -2.0, -18.0, -24.0." in partial
    runs[1] = TimedRun(0.30, 0.03, 0.06)  # above vanilla, but within the noise: not "more robust"
    assert "for k = 2, 10 (PGD-20 only" in verdicts.k_study_verdict(runs, vanilla, 2, 10, NOISE)
    close = {2: runs[2], 10: TimedRun(0.3204, 0.1796, 0.2436)}
    assert "(differences of 0.0, 0.0, +0.6 points)" in verdicts.k_study_verdict(close, vanilla, 2, 10, NOISE)


def test_status_sentence_counts_real_rows_and_names_the_missing_only_if_any():
    class Done:
        params = {"epochs": 20}

    assert verdicts.status_sentence({"a": Done(), "b": None}, "k-study", "cpu").endswith("the others read 'not run'.")
    assert verdicts.status_sentence({"a": Done(), "b": Done()}, "k-study", "cpu") == (
        "2 of the 2 rows come from real runs at the cpu scale (schedules of 20 epochs; the paper trains for 100)."
    )
    assert verdicts.status_sentence({"a": None}, "k-study", "paper").startswith(
        "No real run of the k-study experiments exists at the paper scale yet"
    )


def test_seed_verdict_compares_the_spread_and_flags_a_near_chance_model():
    from pagcore.paper import reported

    seeds = {0: StoredRun(0.20, 0.13, 0.17), 1: StoredRun(0.16, 0.05, 0.09), 2: None}
    verdict = verdicts.seed_verdict(tables.seed_summary(seeds), reported.SEED_ERROR_BARS, "cpu", num_classes=10)
    # Sample std of (20, 16) is 2 sqrt(2) = 2.83 points; of (13, 5), 5.66; of (17, 9), 5.66.
    assert "over 2 seeds, the standard deviation is 2.83 / 5.66 / 5.66 points" in verdict
    assert "against the paper's 0.74 / 0.58 / 0.91 over 3" in verdict
    assert "means of 18.00 / 9.00 / 13.00 against the paper's 79.13 / 15.93 / 50.26" in verdict
    assert "under 2 × chance (20%)" in verdict
    fitted = {0: StoredRun(0.78, 0.15, 0.50), 1: StoredRun(0.80, 0.16, 0.51)}
    assert "chance" not in verdicts.seed_verdict(tables.seed_summary(fitted), reported.SEED_ERROR_BARS, "paper", 10)
    one = verdicts.seed_verdict(tables.seed_summary({0: seeds[0]}), reported.SEED_ERROR_BARS, "cpu", 10)
    assert "only one seed has a complete run" in one
    assert "no run is complete" in verdicts.seed_verdict(None, reported.SEED_ERROR_BARS, "cpu", 10)


def test_lambda_verdict_reads_the_trend_from_the_smallest_to_the_largest_lambda_run_beyond_the_noise():
    def m(clean, linf, l2):
        return {"clean": clean, "linf": linf, "l2": l2, "test_images": 10_000}

    vanilla = m(0.83, 0.0, 0.0)  # lambda 0 never sets the trend
    falling = {0.0: vanilla, 0.01: m(0.70, 0.01, 0.05), 0.4: m(0.32, 0.19, 0.27), 1.0: None}
    verdict = verdicts.lambda_verdict(falling, "cpu", NOISE)
    assert verdict.startswith(
        "At the cpu scale, from λ = 0.01 to λ = 0.4 (2 values that fit their labels): clean 70.0% → 32.0%"
    )
    assert "the trade of the paper's Figure 5" in verdict and "peaks" not in verdict
    falling[1.0] = m(0.25, 0.10, 0.17)  # both robust columns peak at 0.4, by 9 and 10 points
    peaked = verdicts.lambda_verdict(falling, "cpu", NOISE)
    assert "ℓ∞ peaks at λ = 0.4 (19.0%), ℓ2 peaks at λ = 0.4 (27.0%), beyond the noise." in peaked
    assert "Figure 5." in peaked
    falling[1.0] = m(0.25, 0.17, 0.25)  # 2 points under 0.4's: within the noise, no peak
    hump = verdicts.lambda_verdict(falling, "cpu", NOISE)
    assert "peaks" not in hump
    assert "The highest ℓ∞ and ℓ2 accuracies lie between the ends (ℓ∞ 19.0% at λ = 0.4; ℓ2 27.0% at λ = 0.4)" in hump
    assert "above the largest λ's by less than the noise." in hump
    falling[1.0] = m(0.80, 0.005, 0.30)  # clean rises beyond the noise; l-inf falls within it
    against = verdicts.lambda_verdict(falling, "cpu", NOISE)
    assert "λ = 1 (3 values that fit their labels)" in against and "the other way for clean." in against
    assert "The change in ℓ∞ is within the noise (seed spreads of test)." in against
    assert "no trend to read yet" in verdicts.lambda_verdict({0.0: vanilla, 0.4: falling[0.4]}, "paper", NOISE)
    # 22% clean is not above twice chance by twice its noise (about 4 points): no evidence either way.
    falling[1.0] = m(0.22, 0.30, 0.40)
    near = verdicts.lambda_verdict(falling, "cpu", NOISE)
    assert "from λ = 0.01 to λ = 0.4 (2 values that fit their labels)" in near
    assert "λ = 1 fits its labels too poorly" in near


def test_curves_reading_says_whether_a_run_was_still_learning():
    class Curve:
        def __init__(self, accuracies):
            self.history = [{"test_accuracy": a} for a in accuracies]

    settled = verdicts.curves_reading({"a": Curve([0.1, 0.5, 0.6, 0.6]), "b": Curve([0.1, 0.2, 0.3, 0.3])})
    assert "between 30.0% (b) and 60.0% (a)" in settled and "do not show what a longer schedule would reach" in settled
    rising = verdicts.curves_reading({"a": Curve([0.1, 0.2, 0.4, 0.6]), "b": Curve([0.3, 0.3, 0.3, 0.3])})
    assert "still rises by more than a point for a." in rising
    # The last quarter of eight epochs is the two last epochs, from the accuracy before them: 50.0% to 52.5%.
    eight = verdicts.curves_reading({"a": Curve([0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.52, 0.525])})
    assert "still rises by more than a point for a." in eight
    assert "No run" in verdicts.curves_reading({"a": None})


def test_pictures_reading_ranks_the_runs_by_the_references_confidence(tmp_path):
    class Scored:
        def __init__(self, path, confidence, reference="robust-l2", teacher=""):
            self.path = path
            self.params = {"teacher": teacher}
            (path / "evaluations").mkdir(parents=True)
            entry = {
                "name": "pag_score",
                "settings": {"budgets": "real", "subset": {"size": 100, "seed": 0}, "reference": reference},
                "results": {"targeted_confidence": {"score": confidence}},
            }
            (path / "evaluations" / "pag_score-all-x.json").write_text(json.dumps(entry))

    text = verdicts.pictures_reading({"low": Scored(tmp_path / "a", 0.1), "high": Scored(tmp_path / "b", 0.9)}, 10)
    assert "mean probability of: high 90.0%, low 10.0% (a constant guess gives 10%)" in text
    assert "so it does not rank runs a few points apart" in text  # no seed spread of the confidence
    assert "judged by eye" in verdicts.pictures_reading({"none": None}, 10)
    mixed = {
        "student": Scored(tmp_path / "c", 0.95, teacher="robust-l2"),
        "vanilla": Scored(tmp_path / "d", 0.1),
        "robust-l2 itself": Scored(tmp_path / "e", 0.8, reference="robust-linf"),
    }
    text = verdicts.pictures_reading(mixed, 10)
    assert "student (distilled from the reference itself) 95.0%, vanilla 10.0%" in text
    assert text.endswith("robust-l2 itself was scored against another reference and is not ranked with them.")


def test_k_curve_reading_says_what_a_larger_k_buys():
    flat = {1: {"clean": 0.31, "linf": 0.19, "l2": 0.26}, 10: {"clean": 0.32, "linf": 0.19, "l2": 0.27}}
    text = verdicts.k_curve_reading(flat, {1: 80.0, 10: 280.0})
    assert "change by +1.0, 0.0 and +1.0 points, while an epoch takes 3.5 times as long" in text
    assert "only clean and ℓ2 accuracy rises" in text
    falling = {1: {"clean": 0.4, "linf": 0.2, "l2": 0.3}, 10: {"clean": 0.3, "linf": 0.1, "l2": 0.2}}
    assert "do not show a larger k buying accuracy" in verdicts.k_curve_reading(falling, {})
    assert "no trend yet" in verdicts.k_curve_reading({1: flat[1]}, {})


def test_the_toy_alignment_reading_ranks_correlations_only_beyond_their_intervals():
    seeds = range(12)
    robust = {"vanilla": [0.05 + 0.001 * i for i in seeds], "pag": [0.6 + 0.001 * i for i in seeds]}
    # Within each method the score falls as PGD accuracy rises; between the methods it rises.
    against = {"vanilla": [0.2 - 0.01 * i for i in seeds], "pag": [0.9 - 0.01 * i for i in seeds]}
    gap = verdicts.toy_alignment_reading(against, robust)
    assert gap.startswith("12 of the 12 PAG models score higher than the best-aligned vanilla model.")
    assert "bootstrap interval" in gap and "the correlation comes from the gap between the two methods" in gap
    assert " for vanilla and " in gap and " for PAG, against " in gap  # each method named, not parenthesised
    # Within each method the score is scrambled: its intervals include 0.
    scrambled = {
        m: [base + 0.001 * ((k * i) % 12) for i in seeds] for m, base, k in (("vanilla", 0.1, 7), ("pag", 0.8, 5))
    }
    assert "no interval lies above 0" in verdicts.toy_alignment_reading(scrambled, robust)
    # The score follows PGD accuracy within each method as well.
    alike = {"vanilla": [0.1 + 0.01 * i for i in seeds], "pag": [0.8 + 0.01 * i for i in seeds]}
    assert "ranks models trained the same way too" in verdicts.toy_alignment_reading(alike, robust)
    half = {"vanilla": alike["vanilla"], "pag": scrambled["pag"]}
    assert "ranks the vanilla models among themselves (the interval lies above 0), but for the PAG models" in (
        verdicts.toy_alignment_reading(half, robust)
    )
    constant = {"vanilla": [0.0] * 12, "pag": robust["pag"]}  # every vanilla model at 0 % PGD accuracy
    partial = verdicts.toy_alignment_reading(alike, constant)
    assert "within vanilla one of them is constant, and within the other it is 1.00 (95 % bootstrap" in partial


def test_the_seed_chapter_says_which_spread_each_row_carries():
    def seeds_of(*linf):
        return [{"clean": 0.5, "linf": value, "l2": value / 2} for value in linf]

    noise = evidence.seed_noise(
        {
            "one_image": seeds_of(0.1, 0.2, 0.3),
            "vanilla": seeds_of(0.0, 0.0, 0.0),
            "nearest_neighbor": seeds_of(0.1, 0.2),
        },
        "CIFAR-10, cpu scale",
    )
    labels = {"one_image": "One Image", "vanilla": "Vanilla", "nearest_neighbor": "Nearest Neighbor"}
    sentence = verdicts.noise_sentence(noise, "cpu", labels)
    assert sentence.startswith("At the cpu scale the rule uses the measured spread of One Image and Vanilla")
    assert "not yet that of Nearest Neighbor (2 seeds)" in sentence
    assert sentence.endswith("the widest spread measured: clean 0.0, ℓ∞ 10.0, ℓ2 5.0 points.")
    table = tables.noise_table({"cpu": noise, "paper": None}, labels)
    assert "| cpu | Nearest Neighbor | 2 | 0.0 | 7.1 | 3.5 | the widest (too few seeds) |" in table
    assert "| cpu | Vanilla | 3 | 0.0 | 0.0 | 0.0 | its own |" in table
    assert table.endswith("| cpu | any other row | — | 0.0 | 10.0 | 5.0 | the widest |")
    assert "paper" not in table
    assert "no row has two seeds yet" in tables.noise_table({"paper": None}, labels)
    assert "judges nothing there" in verdicts.noise_sentence(None, "paper", labels)
    # One row alone sets the widest, far above every other: the rows that borrow it are judged cautiously.
    apart = evidence.seed_noise(
        {
            "one_image": [{"clean": v, "linf": v, "l2": v} for v in (0.1, 0.2, 0.3)],
            "vanilla": [{"clean": v, "linf": v, "l2": v} for v in (0.80, 0.801, 0.802)],
        },
        "CIFAR-10, cpu scale",
    )
    assert verdicts.noise_sentence(apart, "cpu", labels).endswith(
        "points (the widest is One Image's alone, that of the other rows measured over seeds (Vanilla) at most "
        "clean 0.1, ℓ∞ 0.1, ℓ2 0.1 points, so a row that takes it is judged cautiously: its 'within noise' may hide "
        "a real gap)."
    )


def test_a_printed_difference_is_the_difference_of_the_printed_numbers():
    from pagcore.book.text import percent, shown_points, signed_points

    teacher, row = 0.3106, 0.1894  # shown as 31.1% and 18.9%, 12.12 points apart before rounding
    assert (percent(teacher), percent(row)) == ("31.1%", "18.9%")
    assert shown_points(teacher, row) == 12.2
    assert signed_points(shown_points(row, teacher)) == "-12.2"


def store_pag_score(run, alignment: float, reference: str):
    """``run`` with a stored PAG score of ``alignment`` against ``reference`` (on a 500-image subset)."""
    folder = run.path / "evaluations"
    folder.mkdir(parents=True)
    entry = {
        "name": "pag_score",
        "settings": {"budgets": "real", "subset": {"size": 500}, "reference": reference},
        "results": {"gradient_alignment": {"score": alignment}, "targeted_confidence": {"score": 0.2}},
    }
    (folder / "pag_score.json").write_text(json.dumps(entry))
    return run


def test_a_robust_row_whose_gradients_are_no_better_aligned_than_vanillas_says_so(tmp_path):
    from pagcore.store.runs import RunStore

    store = RunStore(tmp_path)

    def scored(name: str, alignment: float, reference: str = "teacher"):
        run = store.create(name, {"dataset": "cifar10"})
        run.write_json("metrics.json", {"clean": 0.4})
        return store_pag_score(run, alignment, reference)

    # The score's seed spread: two scores differ when more than 2 · √2 · 0.03 ≈ 0.085 apart.
    noise = evidence.Noise({}, {}, "test", alignment=evidence.AlignmentSpread("a row", 0.03, 3))
    vanilla = scored("vanilla", 0.07)
    caveat = verdicts.pag_caveat(scored("close", 0.15), vanilla, noise)
    assert caveat.startswith("its input-gradients are not shown to align better") and "0.15 against 0.07" in caveat
    assert "(a gap must exceed 0.085, the margin the score's seed spread sets)" in caveat
    assert verdicts.pag_caveat(scored("aligned", 0.38), vanilla, noise) == ""
    assert "not measured" in verdicts.pag_caveat(scored("unmeasured", 0.38), vanilla, None)
    assert verdicts.pag_caveat(scored("other", 0.09, reference="elsewhere"), vanilla, noise) == ""  # not comparable
    assert verdicts.pag_caveat(scored("alone", 0.09), None, noise) == ""
    assert verdicts.row_caveats("class_mean", scored("cm", 0.09), vanilla, 0.5, noise)[0].startswith(
        "its clean accuracy does not exceed the 50.0%"
    )


def test_the_vit_pilot_paragraph_reads_its_own_files_and_not_the_resnets(tmp_path):
    write_pilot(tmp_path)  # the ResNet's files: the ViT's paragraph must not read them
    depth = VIT_DEPTH["cpu"]
    assert "ViT of the cpu scale has no results yet" in tables.vit_pilot_paragraph("cifar10", tmp_path)
    rows = [
        {"width": 32, "k": k, "bf16": bf16, "strategy": strategy, "images_per_s": rate}
        for k, bf16, strategy, rate in (
            (0, True, "loop", 2200.0),
            (2, True, "loop", 440.0),
            (2, True, "replicate", 565.0),
            (2, False, "loop", 9e9),
        )
    ]
    speed = {"device": "cpu: test", "batch": 64, "rows": rows}
    vanilla = {"objective": "cross_entropy", "width": 32, "epochs": 2, "epochs_done": 2, "k": 0}
    accuracy = {"runs": [{**vanilla, "test_accuracy": [0.4, 0.55], "seconds_per_epoch": [20.0, 22.0]}]}
    (tmp_path / f"cpu_pilot-throughput-cifar10-vit{depth}-2026-01-01.json").write_text(json.dumps(speed))
    (tmp_path / f"cpu_pilot-accuracy-cifar10-vit{depth}.json").write_text(json.dumps(accuracy))
    text = tables.vit_pilot_paragraph("cifar10", tmp_path)
    # The step the runs take: bf16 with the CPU's strategy, not a faster strategy or float32.
    assert CPU_STRATEGY == "loop" and "2200 vanilla and 440 PAG images per second at width 32" in text
    assert "vanilla reaches 55.0% at width 32 (21 s per epoch)" in text
    assert f"with {depth} blocks instead of {VIT_DEPTH['paper']}" in text
    assert "82.6%" not in text


def test_the_pag_scores_seed_spread_is_the_widest_over_configurations_with_enough_seeds(tmp_path):
    from pagcore.book import masking
    from pagcore.store.runs import RunStore

    store = RunStore(tmp_path)

    def scored(lam: float, seed: int, alignment: float, reference: str = "teacher", **more):
        params = {"dataset": "cifar10", "objective": "pag", "source": "one_image", "scale": "cpu", "lam": lam}
        name = f"run-{lam}-{seed}-{reference}-{'-'.join(f'{k}{v}' for k, v in more.items())}"
        run = store.create(name, {**params, "seed": seed, **{k: v for k, v in more.items() if k != "kind"}})
        run.write_json("record.json", {"kind": more.get("kind", "real"), "status": "complete"})
        run.write_json("metrics.json", {"clean": 0.5})
        return store_pag_score(run, alignment, reference)

    runs = [scored(0.4, seed, a) for seed, a in enumerate((0.20, 0.26, 0.23))]  # std 0.03
    runs += [scored(1.0, seed, a) for seed, a in enumerate((0.30, 0.31, 0.32))]  # std 0.01
    runs += [scored(2.0, seed, a) for seed, a in enumerate((0.1, 0.5))]  # two seeds: too few to trust
    runs += [scored(0.4, 3, 0.9, reference="elsewhere")]  # another reference: another configuration
    # Another schedule of the first configuration: the label cannot tell it apart, so a run names it.
    runs += [scored(0.4, seed, a, epochs=5) for seed, a in enumerate((0.0, 0.45, 0.9))]
    groups = masking.seed_scores(runs)
    assert sorted(len(scores) for scores in groups.values()) == [1, 2, 3, 3, 3]
    assert not any("seed" in label for label in groups)  # a configuration is named without its seed
    assert any(label.endswith("-epochs5]") for label in groups)
    # The 5-epoch runs (std 0.45) are no smoke runs here: with them the widest is theirs.
    assert evidence.alignment_spread(groups).std == pytest.approx(0.45)
    spread = evidence.alignment_spread({k: v for k, v in groups.items() if "epochs5" not in k})
    assert spread.std == pytest.approx(0.03) and spread.seeds == 3 and "λ = 0.4" in spread.label
    assert spread.margin == pytest.approx(2 * 2**0.5 * 0.03)
    assert evidence.aligned_above(spread, 0.40, 0.30) and not evidence.aligned_above(spread, 0.38, 0.30)
    assert not evidence.aligned_above(None, 0.9, 0.0)
    assert evidence.alignment_spread({"one": [0.1, 0.5]}) is None
    # The store's spread skips smoke runs: a smoke configuration with a wider spread does not count.
    for seed, a in enumerate((0.0, 0.9, 0.1)):
        scored(3.0, seed, a, kind="smoke")
    assert masking.measured_alignment_spread(str(tmp_path)).std == pytest.approx(0.45)
    assert masking.measured_alignment_spread(str(tmp_path), kind="smoke").seeds == 3
