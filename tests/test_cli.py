"""Every subcommand of `python -m pagcore`, end to end through the real entry point, on tiny settings."""

import json
import subprocess
import sys

import pytest

from pagcore.cli import build_parser

# Code tests, never results: 32 synthetic training images, width-4 ResNet-18, one epoch.
SYNTHETIC = ["--synthetic", "32", "16"]
TINY_TRAIN = [
    "--epochs",
    "1",
    "--width",
    "4",
    "--batch-size",
    "16",
    "--pgd-steps",
    "1",
    "--picture-images",
    "1",
    "--no-progress",
    *SYNTHETIC,
]
TESTED_SUBCOMMANDS = {
    "toy",
    "weights",
    "train",
    "table",
    "evaluate",
    "sweep",
    "selftest",
    "ceiling",
    "denoiser",
    "posterior-gap",
}  # selftest: test_selftest.py


def pagcore(*args, timeout=300):
    out = subprocess.run([sys.executable, "-m", "pagcore", *args], capture_output=True, text=True, timeout=timeout)
    return out, (json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None)


def test_every_subcommand_is_tested_here():
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(subcommands) == TESTED_SUBCOMMANDS


def test_weights_subcommand_restores_and_names_what_it_needs(tmp_path):
    out, result = pagcore("weights", "restore", "--all", "--runs-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert result == {"action": "restore", "runs": {}}
    for argv, said in ((["restore"], "--all"), (["archive", "--all"], "archive names its runs")):
        out, _ = pagcore("weights", *argv)
        assert out.returncode == 2 and said in out.stderr


def test_toy_subcommand(tmp_path):
    out, result = pagcore("toy", "--seeds", "0", "--epochs", "1", "--pool-size", "5", "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    assert result["seeds"] == [0]
    for model in ("vanilla", "pag"):
        assert 0.0 <= result[model]["pgd"] <= result[model]["clean"] <= 1.0


def test_ceiling_subcommand_records_its_measurement(tmp_path):
    out, result = pagcore(
        "ceiling", "--dataset", "cifar10", "--synthetic", "64", "32", "--epochs", "1", "--measurements", str(tmp_path)
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert result["kind"] == "smoke" and set(result["accuracy"]) == {"nearest", "linear", "mlp"}
    record = json.loads((tmp_path / "class_mean_distance_ceiling-cifar10.json").read_text())
    assert record["kind"] == "smoke" and record["parameters"]["test_images"] == 32
    out, _ = pagcore("ceiling", "--dataset", "cifar10", "--synthetic", "64", "32", "--epochs", "-1")
    assert out.returncode == 2 and "epochs" in out.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A vanilla and an adversarially trained tiny run, trained through the CLI."""
    runs = tmp_path_factory.mktemp("runs")
    names = {}
    rows = {
        "vanilla": ["--objective", "cross_entropy"],
        "adversarial": ["--objective", "adversarial", "--threat", "l2", "--adversary-steps", "1"],
    }
    for row, knobs in rows.items():
        out, result = pagcore("train", *knobs, *TINY_TRAIN, "--runs", str(runs))
        assert out.returncode == 0, out.stderr[-2000:]
        assert result["status"] == "complete"
        names[row] = result["run"]
    return runs, names


def identity_files(run_dir):
    return {name: (run_dir / name).read_bytes() for name in ("params.json", "record.json", "metrics.json")}


def test_evaluate_again_without_attacks(trained):
    runs, names = trained
    out, result = pagcore("evaluate", "--run", names["vanilla"], "--runs", str(runs), "--no-progress", *SYNTHETIC)
    assert out.returncode == 0, out.stderr[-2000:]  # a stored run evaluated with no attack named
    assert result["run"] == names["vanilla"]
    assert (
        result["metrics"]["test_images"] == 16
        and abs(result["metrics"]["linf"] * 16 - round(result["metrics"]["linf"] * 16)) < 1e-9
    )
    assert result["metrics"]["attacks"]["linf"]["eps"] == 0.031  # the paper's PGD radius


def test_evaluate_attacks_are_stored_beside_the_run_once(trained):
    runs, names = trained
    run_dir = runs / names["vanilla"]
    before = identity_files(run_dir)
    args = [
        "evaluate",
        "--run",
        names["vanilla"],
        "--runs",
        str(runs),
        "--attacks",
        "pgd20,pgd100,autoattack",
        "--checklist",
        "--pag-score",
        "--subset",
        "6",
        "--reduced-for-tests",
        "--no-progress",
        *SYNTHETIC,
    ]
    out, first = pagcore(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    created = [line for line in first["evaluations"] if line.get("created")]
    assert sorted(line["name"] for line in created) == sorted(
        ["pgd20", "pgd20", "pgd100", "pgd100", "autoattack", "autoattack", "checks", "checks", "pag_score"]
    )
    stored = {p.stem: json.loads(p.read_text()) for p in (run_dir / "evaluations").glob("*.json")}
    assert set(stored) == {line["key"] for line in created}
    for entry in stored.values():
        assert entry["settings"]["subset"]["size"] == 6 and len(entry["settings"]["subset"]["indices_sha256"]) == 64
        assert entry["provenance"]["git"] and entry["run"] == names["vanilla"]
    autoattack = [e for e in stored.values() if e["name"] == "autoattack"]
    assert {e["settings"]["eps"] for e in autoattack} == {8 / 255, 0.5}
    assert all(e["settings"]["package"] == "pyautoattack" and e["settings"]["package_version"] for e in autoattack)
    assert all("reduced" in e["settings"]["version"] for e in autoattack)  # test budgets are labelled as such
    pgd20 = {e["settings"]["norm"]: e for e in stored.values() if e["name"] == "pgd20"}
    assert pgd20["linf"]["settings"]["eps"] == 0.031 and pgd20["linf"]["settings"]["iterate"] == "last"
    checks = [e for e in stored.values() if e["name"] == "checks"]
    assert all(e["settings"]["source"] == names["vanilla"] for e in checks)  # the only vanilla run: itself
    pag = next(e for e in stored.values() if e["name"] == "pag_score")
    assert pag["settings"]["reference"] == names["adversarial"]
    assert -1.0 <= pag["results"]["gradient_alignment"]["score"] <= 1.0
    assert identity_files(run_dir) == before  # identity, record and training metrics untouched

    mtimes = {p.name: p.stat().st_mtime_ns for p in (run_dir / "evaluations").iterdir()}
    out, again = pagcore(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not any(line.get("created") for line in again["evaluations"])
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "evaluations").iterdir()} == mtimes
    assert not list((run_dir / "evaluations").glob("*.tmp"))

    # Another subset is another evaluation: new files, the old ones kept.
    pgd20 = ["evaluate", "--run", names["vanilla"], "--runs", str(runs), "--attacks", "pgd20", "--no-progress"]
    out, other = pagcore(*pgd20, "--subset", "5", *SYNTHETIC)
    assert out.returncode == 0 and all(line["created"] for line in other["evaluations"])
    assert len(list((run_dir / "evaluations").glob("*.json"))) == len(stored) + 2

    # --threats keeps the attacks to the threat models it names.
    out, one = pagcore(*pgd20, "--subset", "4", "--threats", "l2", *SYNTHETIC)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line["key"].split("-")[:2] for line in one["evaluations"]] == [["pgd20", "l2"]]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--attacks", "pgd7"], "attacks must be"),
        (["--attacks", ""], "attacks must be"),
        (["--attacks", "checks"], "attacks must be"),  # the checklist is --checklist, not an attack
        (["--attacks", "pgd20", "--threats", "l3"], "threats must be"),
        (["--checklist", "--threats", ","], "threats must be"),
        (["--pag-score", "--threats", "l2"], "--threats goes with --attacks or --checklist"),
    ],
)
def test_evaluate_rejects_unknown_attacks_and_threats(trained, flags, message):
    runs, names = trained
    out, _ = pagcore("evaluate", "--run", names["vanilla"], "--runs", str(runs), *flags, *SYNTHETIC)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_evaluate_a_whole_table_of_runs(trained):
    runs, names = trained
    table = ["evaluate", "--table", "cifar10", "--runs", str(runs), "--no-progress", *SYNTHETIC]
    for wrong, message in (
        (["--scale", "paper"], "name them"),  # no --attacks
        (["--attacks", "pgd20"], "needs --scale"),
        (["--attacks", "pgd20", "--scale", "paper", "--subset", "5"], "chooses each run's subset"),
    ):
        out, _ = pagcore(*table, *wrong)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr

    smoke = [*table, "--scale", "paper", "--kind", "smoke", "--attacks", "pgd20", "--threats", "l2"]
    out, none = pagcore(*smoke, "--max-minutes", "0")
    assert out.returncode == 0, out.stderr[-2000:]
    assert {line["run"] for line in none["runs"]} == set(names.values())
    assert all(line["skipped"] == "out of time" for line in none["runs"])

    out, result = pagcore(*smoke)
    assert out.returncode == 0, out.stderr[-2000:]
    # The tiny runs answer no row of the paper-scale table; they are evaluated as the table's other runs.
    assert set(result["rows_without_a_run"]) == {
        "vanilla",
        "one_image",
        "class_mean",
        "nearest_neighbor",
        "rigd_linf",
        "rigd_l2",
        "adversarial_linf",
        "adversarial_l2",
        "score",
    }
    assert {line["run"]: line["subset"] for line in result["runs"]} == {name: 500 for name in names.values()}
    for line in result["runs"]:
        (evaluation,) = line["evaluations"]  # in ℓ2 only, as --threats asks
        assert evaluation["name"] == "pgd20" and evaluation["key"].startswith("pgd20-l2-") and evaluation["created"]
        stored = json.loads(open(line["evaluations"][0]["path"]).read())
        assert stored["settings"]["subset"]["size"] == 16  # 500 asked, the whole synthetic test set given

    # A complete run whose weights are not kept in the store is passed over, with the reason.
    weights = runs / sorted(names.values())[0] / "checkpoint-final.pt"
    weights.rename(weights.with_suffix(".away"))
    try:
        out, again = pagcore(*smoke)
    finally:
        weights.with_suffix(".away").rename(weights)
    assert out.returncode == 0, out.stderr[-2000:]
    skipped = {line["run"]: line.get("skipped") for line in again["runs"]}
    assert skipped[sorted(names.values())[0]] == "its final weights are not in this store"


def test_table_subcommand_trains_a_teacher_before_its_student_then_skips_them(tmp_path):
    args = ["table", "--rows", "vanilla", "rigd_l2", "--adversary-steps", "1", *TINY_TRAIN, "--runs", str(tmp_path)]
    out, result = pagcore(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert result["kind"] == "smoke" and result["complete"] is True
    assert list(result["rows"]) == ["vanilla", "rigd_l2"]
    student = json.loads((tmp_path / result["rows"]["rigd_l2"]["run"] / "params.json").read_text())
    teacher = json.loads((tmp_path / student["teacher"] / "params.json").read_text())
    assert teacher["objective"] == "adversarial" and teacher["adversary"]["threat"] == "l2"
    runs_before = sorted(p.name for p in tmp_path.iterdir())
    out, again = pagcore(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert again["rows"] == result["rows"] and sorted(p.name for p in tmp_path.iterdir()) == runs_before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--objective", "pag"], "objective: each row sets its own"),
        (["--rows", "tabel_1"], "invalid choice"),
    ],
)
def test_table_subcommand_rejects_knobs_that_rows_set(tmp_path, args, message):
    out, _ = pagcore("table", *args, *TINY_TRAIN, "--runs", str(tmp_path))
    assert out.returncode == 2 and message in out.stderr
    assert not any(tmp_path.iterdir())


def test_sweep_subcommand(tmp_path):
    """A 1x2 toy grid through local processes, then again: the second call skips both points."""
    args = (
        "sweep",
        "toy",
        "-p",
        "seeds",
        "[0]",
        "-p",
        "epochs",
        "1",
        "2",
        "-p",
        "pool-size",
        "5",
        "--out",
        str(tmp_path / "sweep"),
        "--array-parallelism",
        "1",
    )
    out, result = pagcore(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert [p["state"] for p in summary["points"]] == ["DONE", "DONE"]
    again, _ = pagcore(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "sweep" / "summary.json").read_text())["points"][0]["state"].startswith("SKIPPED")


def test_denoiser_subcommand_trains_measures_and_then_only_reads(tmp_path):
    arguments = ["denoiser", "--synthetic", "64", "20", "--width", "8", "--multipliers", "1", "2", "--epochs", "1"]
    arguments += ["--batch-size", "16", "--runs", str(tmp_path), "--quality-images", "10", "--no-progress"]
    out, result = pagcore(*arguments)
    assert out.returncode == 0, out.stderr[-2000:]
    assert result["finished"] and result["kind"] == "smoke" and 0 <= result["implicit_classifier"] <= 1
    run = tmp_path / "denoisers" / result["run"]
    record, metrics = (json.loads((run / f"{name}.json").read_text()) for name in ("record", "metrics"))
    assert record["status"] == "complete" and metrics["test_images"] == 10
    errors = metrics["errors"]["0.1"]
    assert set(errors) == {"conditional", "unconditional", "noisy", "gaussian", "empirical"}
    assert errors["noisy"] == pytest.approx(0.01, rel=0.2)  # the noisy image's error is σ²
    out, again = pagcore(*arguments)
    assert again == result and len(json.loads((run / "record.json").read_text())["sessions"]) == 1
    out, _ = pagcore(*arguments, "--label-drop", "1.5")
    assert out.returncode == 2 and "label_drop" in out.stderr
    # The score alignment of a classifier of the same store compares with this denoiser.
    out, trained = pagcore("train", "--objective", "cross_entropy", "--runs", str(tmp_path), *TINY_TRAIN)
    assert out.returncode == 0, out.stderr[-2000:]
    evaluate = ["evaluate", "--run", trained["run"], "--runs", str(tmp_path), "--score-alignment", "--subset", "6"]
    out, evaluated = pagcore(*evaluate, "--no-progress", *SYNTHETIC)
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = evaluated["evaluations"]
    stored = json.loads(open(line["path"]).read())
    assert stored["settings"]["denoiser"] == result["run"] and stored["settings"]["sigma"] == 0.2
    assert -1 <= stored["results"]["score"] <= 1 and stored["results"]["images"] == 6


def test_posterior_gap_subcommand(tmp_path):
    out, result = pagcore(
        "posterior-gap", "--synthetic", "64", "32", "--images", "6", "--no-denoiser", "--measurements", str(tmp_path)
    )
    assert out.returncode == 0, out.stderr
    assert result["kind"] == "smoke" and set(result["gaps"]) == {"one_image", "class_mean", "nearest_neighbor"}
    assert (tmp_path / "posterior_gap-cifar10.json").exists()
    out, _ = pagcore("posterior-gap", "--synthetic", "64", "32", "--images", "0")
    assert out.returncode == 2 and "images must be" in out.stderr
