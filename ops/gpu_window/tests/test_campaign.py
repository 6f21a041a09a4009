"""The GPU campaign's CPU-testable parts: carry planning, file parts, the strategy read from a CUDA
benchmark, the priority lists, slicing across calls, CPU-scale runs side by side (on CPU, with
synthetic data), packing within the return limits, and a dry call without Jupyter, PyYAML or
submitit, and a whole dry campaign."""

import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ops.gpu_window import campaign, transfer
from ops.gpu_window.campaign import CPU_PRIORITY, PRIORITY, CampaignConfig
from ops.gpu_window.transfer import Item, PlanError, check_plan, join_parts, plan_parts, room_for_carry, split_file
from pagcore.base.deadline import Deadline
from pagcore.config import SCALES, TrainConfig
from pagcore.orchestrate.book_runs import SCORE_DENOISERS, BookRun
from pagcore.orchestrate.queue import Status
from pagcore.orchestrate.workers import run_worker
from pagcore.store.runs import RunStore
from pagcore.train.trainer import run_name_for

ROOT = Path(__file__).resolve().parents[3]
HERE = ROOT / "ops" / "gpu_window"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- carry planning and parts ------------------------------------------------------------------------


def test_plan_parts_fills_few_parts_within_the_room_and_names_a_file_too_big():
    sizes = {"a": 17, "b": 17, "c": 17, "d": 14, "e": 14, "f": 1}
    items = [Item(name, name, size) for name, size in sizes.items()]
    plan = plan_parts(items, room=40)
    assert all(size <= 40 for size in plan.sizes())
    assert sorted(i.destination for part in plan.parts for i in part) == sorted(sizes)  # each file once
    assert len(plan.parts) == 3  # 80 bytes need at least 2 parts of 40; 17+17 leaves no room for a 14
    with pytest.raises(PlanError, match="b2.*41.*split it first"):
        plan_parts([Item("b2", "b2", 41), Item("s", "s", 1)], room=40)


def test_room_and_last_minute_check_follow_the_tree():
    assert room_for_carry(10 * transfer.MiB) == transfer.CARRY_LIMIT - 10 * transfer.MiB - transfer.SAFETY_BYTES
    with pytest.raises(PlanError, match="no room"):
        room_for_carry(transfer.CARRY_LIMIT)
    plan = plan_parts([Item("x", "x", 50)], room=60, tree=30)
    check_plan(plan, tree_now=30, limit=100)
    with pytest.raises(PlanError, match="part 1"):
        check_plan(plan, tree_now=51, limit=100)  # the tree grew since the plan


def test_this_repository_leaves_room_beside_it_for_staging_data():
    # Every tracked byte travels with each GPU command: committed runs grow the tree, and a tree
    # over the 64 MiB limit would have every call refused.
    room = transfer.CARRY_LIMIT - transfer.tree_bytes(ROOT) - transfer.SAFETY_BYTES
    assert room >= 8 * transfer.MiB, (
        f"the tree leaves {room / transfer.MiB:.1f} MiB per staging call; keep large files out of git"
    )


def test_split_and_join_round_trip_and_refuse_missing_or_corrupt_parts(tmp_path):
    payload = torch.randint(0, 256, (10_000,), dtype=torch.uint8).numpy().tobytes()
    source = tmp_path / "checkpoint-latest.pt"
    source.write_bytes(payload)
    manifest = split_file(source, tmp_path / "parts", part_bytes=3000)
    parts = sorted((tmp_path / "parts").glob("*.part*[0-9]"))
    assert [p.stat().st_size for p in parts] == [3000, 3000, 3000, 1000]
    assert join_parts(manifest, tmp_path / "joined.pt").read_bytes() == payload
    parts[1].write_bytes(b"x" * 3000)
    with pytest.raises(ValueError, match="part02 is corrupt"):
        join_parts(manifest, tmp_path / "again.pt")
    assert not (tmp_path / "again.pt").exists()
    parts[2].unlink()
    with pytest.raises(FileNotFoundError, match="part03"):
        join_parts(manifest, tmp_path / "again.pt")


def fake_repo(tmp_path: Path, tree_bytes: int) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tracked.bin").write_bytes(b"t" * tree_bytes)
    (repo / ".gitignore").write_text(".data/\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "tracked.bin"], cwd=repo, check=True)
    return repo


def fake_dataset(shared: Path, name: str, sizes: dict[str, int]) -> None:
    folder = shared / name
    folder.mkdir(parents=True)
    for file, size in sizes.items():
        (folder / file).write_bytes(bytes([len(file)]) * size)
    # Stands in for the dataset's decoder: it writes its output only when every mosaic is there.
    (folder / "unpack.py").write_text(
        "import sys, pathlib\n"
        "here = pathlib.Path(__file__).parent\n"
        f"assert all((here / n).exists() for n in {sorted(sizes)!r})\n"
        "pathlib.Path(sys.argv[1]).write_text('decoded')\n"
    )


def test_staging_plans_parts_beside_the_tree_checks_sizes_and_unpacks_what_arrived(tmp_path):
    stage = load_tool("stage_data")
    repo = fake_repo(tmp_path, tree_bytes=2000)
    (repo / "untracked-not-ignored.txt").write_bytes(b"u" * 500)  # travels too
    shared = tmp_path / "shared"
    mosaics = {"train-0.webp": 1700, "train-1.webp": 1700, "train-2.webp": 9000, "test-0.webp": 1700, "labels.npz": 40}
    fake_dataset(shared, "cifar10", mosaics)
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"c" * 2500)
    split_file(checkpoint, repo / ".data" / "checkpoints" / "run-a", part_bytes=1500, stem="checkpoint-latest.pt")
    limit = 2500 + 4000 + transfer.SAFETY_BYTES  # the tree (2500 bytes) leaves 4000 for each part

    # A package to carry, as an installed one lies in a site-packages folder.
    site = tmp_path / "elsewhere" / ".venv" / "lib" / "python3.11" / "site-packages"
    for path, size in {
        "pkg_under_test/__init__.py": 30,
        "pkg_under_test/examples/big.py": 3000,
        "pkg_under_test-1.0.dist-info/METADATA": 20,
    }.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(b"p" * size)
    packages, absent = stage.package_items(("pkg_under_test", "not_installed_anywhere"), repo=tmp_path / "elsewhere")
    assert absent == ["not_installed_anywhere"]
    assert sorted(i.destination for i in packages) == [
        "pylib/pkg_under_test-1.0.dist-info/METADATA",
        "pylib/pkg_under_test/__init__.py",  # its examples stay behind
    ]
    plan = stage.plan(
        repo,
        shared,
        ["cifar10"],
        repo / ".data" / "checkpoints",
        repo / ".data" / "carry",
        limit=limit,
        packages=packages,
    )
    assert plan.tree == 2500 + len(".data/\n") and plan.room == limit - plan.tree - transfer.SAFETY_BYTES
    assert all(size <= plan.room for size in plan.sizes())
    sent = sorted(i.destination for part in plan.parts for i in part)
    assert "cifar10/unpack.py" in sent and "checkpoints/run-a/checkpoint-latest.pt.part02" in sent
    # No carry can hold the 9,000-byte mosaic, so it travels as pieces of at most the room.
    assert "cifar10/train-2.webp" not in sent
    assert [d for d in sent if "train-2" in d] == [
        "split/cifar10/train-2.webp.part01",
        "split/cifar10/train-2.webp.part02",
        "split/cifar10/train-2.webp.part03",
        "split/cifar10/train-2.webp.parts.json",
    ]
    assert len(plan.parts) >= 4
    sizes = stage.check(repo, repo / ".data" / "carry", limit=limit)
    assert len(sizes) == len(plan.parts)
    # A commit made after planning, larger than the safety margin the plan kept free.
    (repo / "grown.bin").write_bytes(b"g" * (transfer.SAFETY_BYTES + 4000))
    with pytest.raises(PlanError):
        stage.check(repo, repo / ".data" / "carry", limit=limit)

    # The GPU machine: the carried folders arrive one call at a time.
    carry, staged, runs = repo / ".data" / "carry", tmp_path / "remote" / "staged", tmp_path / "remote" / "runs"
    # The call that carries the mosaic's first piece is the one that did not arrive.
    late = next(n for n, part in enumerate(plan.parts, 1) if any(i.destination.endswith("webp.part01") for i in part))
    held_back = tmp_path / "held-back"
    (carry / f"part-{late}").rename(held_back)
    report = stage.unpack(carry, staged, runs, tmp_path / "remote")
    assert report["missing_parts"] == [late]
    assert report["split"] == {"cifar10/train-2.webp": "incomplete: missing train-2.webp.part01"}
    assert report["datasets"]["cifar10"] == "incomplete: missing train-2.webp"
    assert not (tmp_path / "remote" / "cifar10.npz").exists()
    held_back.rename(carry / f"part-{late}")
    report = stage.unpack(carry, staged, runs, tmp_path / "remote")
    assert report["missing_parts"] == [] and report["split"] == {"cifar10/train-2.webp": "joined"}
    assert (staged / "cifar10" / "train-2.webp").read_bytes() == (shared / "cifar10" / "train-2.webp").read_bytes()
    assert report["datasets"]["cifar10"].startswith("ready") and (tmp_path / "remote" / "cifar10.npz").exists()
    assert (runs / "run-a" / "checkpoint-latest.pt").read_bytes() == checkpoint.read_bytes()
    assert (tmp_path / "remote" / "pylib" / "pkg_under_test" / "__init__.py").read_bytes() == b"p" * 30
    assert "pylib" not in report["datasets"]


# -- priority, slices, pack --------------------------------------------------------------------------


def dry_settings(tmp_path: Path, **changes) -> CampaignConfig:
    values = {
        "out": tmp_path / "out",
        "work": tmp_path / "work",
        "minutes": 1.0,
        "steps": campaign.STEPS,
        "device": "cpu",
        "data": {"cifar10": "", "stl10": ""},
        "dry": True,
        "slice_minutes": 0.05,
        "pack_minutes": 0.0,
        "repo_runs": tmp_path / "repo-runs",
        "cpu_scale_workers": 2,
        "cpu_scale_measure_minutes": 0.01,
    }
    return CampaignConfig(**{**values, **changes})


class CountedDeadline(Deadline):
    """Time for the first ``answers`` training slices, then none."""

    def __init__(self, answers: int):
        super().__init__(time.monotonic())
        self.slices = 0
        self.answers = answers

    def seconds_left(self) -> float:
        return 3600.0 if self.slices < self.answers else 0.0

    def earlier(self, seconds: float) -> Deadline:
        return self

    def minutes_left(self) -> float:
        self.slices += 1  # asked once per slice, for its length
        return 60.0


def test_runs_continue_across_calls_and_complete_runs_anywhere_are_skipped(tmp_path):
    data = campaign.datasets(dry_settings(tmp_path))
    # Slices of a microsecond stop after one step each: a run needs many of them, over two calls.
    settings = dry_settings(tmp_path, slice_minutes=1e-7)
    first = campaign.run_training(settings, data, CountedDeadline(answers=3), "auto")
    assert [o["outcome"] for o in first] == ["unfinished"] and first[0]["entry"] == "cifar10 vanilla"
    assert [s["epochs_done"] for s in first[0]["slices"]] == [0, 0, 0]  # three slices of one step each
    vanilla = RunStore(settings.work / "runs").run(first[0]["run"])
    assert vanilla.checkpoint_path("latest").exists() and not vanilla.complete

    second = campaign.run_training(settings, data, CountedDeadline(answers=20), "auto")
    assert second[0]["entry"] == "cifar10 vanilla" and second[0]["outcome"] == "complete"
    assert len(vanilla.record["sessions"]) > 3 and vanilla.record["scale"] == "paper"
    assert vanilla.record["sessions"][0]["device"].startswith("cpu")
    assert second[1]["entry"] == "cifar10 class_mean"

    # The next entry is the first without a complete run; one complete in the repository's store counts.
    labels = [e.label for e in PRIORITY]
    upcoming = campaign.next_missing(settings)
    assert labels.index(upcoming.label) == sum(o["outcome"] == "complete" for o in second)
    status = campaign.entry_status(upcoming, settings)
    assert status.state == "missing"
    repo_run = RunStore(settings.repo_runs).create(status.run, {"scale": "paper"})
    repo_run.write_json("record.json", {"status": "complete", "kind": "smoke"})
    repo_run.write_json("metrics.json", {"clean": 0.1})
    assert campaign.next_missing(settings).label == labels[labels.index(upcoming.label) + 1]


# -- CPU-scale runs side by side ---------------------------------------------------------------------


def cpu_entry(row: str, **overrides) -> BookRun:
    return BookRun("table", "cifar10", row, overrides, scale="cpu")


def mark_complete(store_root: Path, name: str, scale: str) -> None:
    run = RunStore(store_root).create(name, {"scale": scale})
    run.write_json("record.json", {"status": "complete", "kind": "smoke", "sessions": []})
    run.write_json("metrics.json", {"clean": 0.1})


def test_cpu_scale_entries_keep_the_preset_and_wait_while_it_is_provisional(tmp_path, monkeypatch):
    real = dry_settings(tmp_path, dry=False, data={"cifar10": str(tmp_path / "cifar10.npz"), "stl10": ""})
    # The name a CPU machine gives the run: python -m pagcore train --scale cpu --source class_mean.
    flat = {"scale": "cpu", "dataset": "cifar10", "objective": "pag", "source": "class_mean"}
    name = run_name_for(TrainConfig.from_flat(flat).resolve(), "real")
    preset = SCALES["cpu"]["cifar10"]
    monkeypatch.setitem(SCALES["cpu"], "cifar10", replace(preset, final=False, note="awaiting its pilot"))
    blocked = campaign.entry_status(cpu_entry("class_mean"), real)
    assert blocked.state == "blocked" and blocked.run == name and "provisional (awaiting its pilot)" in blocked.why
    state = {"calls": [], "sent": {}, "cpu_scale_measurement": {"speedup": 3.0}}
    report = campaign.run_cpu_scale(real, state, Deadline.after(1.0), "measured in an earlier call")
    assert report["runs"] == [] and not list((real.work / "cpu-scale-workers").glob("*"))  # no worker started
    assert {b["entry"] for b in report["blocked"]} == {e.label for e in CPU_PRIORITY}
    assert report["measurement"] == {"speedup": 3.0} and report["complete"] == 0

    monkeypatch.setitem(SCALES["cpu"], "cifar10", replace(preset, final=True))
    assert campaign.entry_status(cpu_entry("class_mean"), real) == Status("missing", name)
    # Unfinished in the repository with sessions on another kind of device: a CPU machine's, left to it.
    elsewhere = RunStore(real.repo_runs).create(name, {"scale": "cpu"})
    elsewhere.write_json("record.json", {"status": "interrupted", "kind": "real", "sessions": [{"device": "cuda: H"}]})
    status = campaign.entry_status(cpu_entry("class_mean"), real)
    assert status.state == "blocked" and "another machine" in status.why
    campaign.seed_store(real)
    assert not (real.work / "runs" / name).exists()
    elsewhere.write_json("record.json", {"status": "interrupted", "kind": "real", "sessions": [{"device": "cpu: x"}]})
    assert campaign.entry_status(cpu_entry("class_mean"), real).state == "missing"


def test_the_score_based_row_waits_for_the_books_denoiser_which_the_store_is_seeded_with(tmp_path):
    settings = dry_settings(tmp_path)
    entry = next(e for e in PRIORITY if e.row == "score")
    assert entry.overrides["denoiser"] == SCORE_DENOISERS[entry.dataset]
    blocked = campaign.entry_status(entry, settings)
    assert blocked.state == "blocked" and "denoiser" in blocked.why
    # The repository's denoiser, as committed: its record, its measured quality and its weights.
    committed = RunStore(settings.repo_runs / "denoisers").create(
        entry.overrides["denoiser"], {"dataset": "cifar10", "sigma_min": 0.01, "sigma_max": 1.0}
    )
    committed.write_json("record.json", {"status": "complete", "kind": "real", "sessions": []})
    committed.write_json("metrics.json", {"implicit_classifier": {"accuracy": 0.5}})
    committed.checkpoint_path("final").write_bytes(b"w" * 100)
    campaign.seed_store(settings)
    seeded = RunStore(settings.work / "runs" / "denoisers").run(committed.name)
    assert seeded.checkpoint_path("final").read_bytes() == b"w" * 100 and seeded.complete
    assert campaign.entry_status(entry, settings).state == "missing"


def test_missing_cpu_scale_runs_train_side_by_side_and_a_rigd_run_waits_for_its_teacher(tmp_path, monkeypatch):
    settings = dry_settings(tmp_path)
    done = cpu_entry("one_image")
    # The student first: it must wait, while the entries after it start.
    entries = (cpu_entry("rigd_linf"), cpu_entry("vanilla"), cpu_entry("adversarial_linf"), done)
    monkeypatch.setattr(campaign, "CPU_PRIORITY", entries)
    mark_complete(settings.repo_runs, campaign.entry_status(done, settings).run, "cpu")
    state = {"calls": [], "sent": {}, "cpu_scale_measurement": {"speedup": 2.0}}
    report = campaign.run_cpu_scale(settings, state, Deadline.after(3.0), "measured in an earlier call")

    runs = {r["entry"]: r for r in report["runs"]}
    student, vanilla, teacher = (runs[e.label] for e in entries[:3])
    assert set(runs) == {e.label for e in entries[:3]}  # the complete entry is not trained again
    assert all(r["outcome"] == "complete" and r["images"] == 64 for r in runs.values()), report["runs"]
    assert max(vanilla["launched"], teacher["launched"]) < min(vanilla["exited"], teacher["exited"])  # side by side
    teacher_record = RunStore(settings.work / "runs").run(teacher["run"]).path / "record.json"
    assert student["launched"] >= teacher_record.stat().st_mtime  # once its teacher's record said complete
    assert report["complete"] == report["of"] == 4 and report["blocked"] == report["waiting"] == []
    assert report["images_per_second"] > 0
    for r in runs.values():
        assert r["images_per_second"] == round(r["images"] / r["train_seconds"], 1)
        stored = RunStore(settings.work / "runs").run(r["run"])
        assert stored.complete and stored.record["scale"] == "cpu" and stored.params["width"] == 4
        assert stored.record["sessions"][0]["device"].startswith("cpu")
        assert stored.checkpoint_path("final").exists()
    assert RunStore(settings.work / "runs").run(student["run"]).params["teacher"] == teacher["run"]


def test_side_by_side_is_measured_once_and_kept(tmp_path, monkeypatch):
    settings = dry_settings(tmp_path)
    state = campaign.load_state(settings.work)
    short = Deadline.after(0.1)
    assert campaign.measure_once(settings, state, short).startswith("not measured")
    assert "cpu_scale_measurement" not in state

    assert campaign.measure_once(settings, state, Deadline.after(2.0)) == "measured in this call"
    measurement = state["cpu_scale_measurement"]
    assert measurement["ok"] and measurement["kind"] == "smoke"
    assert [p["workers"] for p in measurement["phases"]] == [1, 2]
    for phase in measurement["phases"]:
        assert len(phase["runs"]) == phase["workers"] and all(r["images"] > 0 for r in phase["runs"])
        for r in phase["runs"]:
            assert r["images_per_second"] == round(r["images"] / r["train_seconds"], 1)
        # Over the span of all of them, never more than the sum of each run's own rate.
        assert 0 < phase["images_per_second"] <= sum(r["images_per_second"] for r in phase["runs"]) + 0.2
    alone, together = (p["images_per_second"] for p in measurement["phases"])
    assert measurement["speedup"] == round(together / alone, 2)
    assert json.loads((settings.work / "state.json").read_text())["cpu_scale_measurement"] == measurement
    assert not (settings.work / "cpu-scale-measurement").exists()  # its runs were scratch

    def no_worker(*args):
        raise AssertionError("measured twice")

    monkeypatch.setattr(campaign, "launch_worker", no_worker)
    assert campaign.measure_once(settings, state, Deadline.after(2.0)) == "measured in an earlier call"
    assert state["cpu_scale_measurement"] == measurement


def test_a_short_budget_stops_the_workers_cleanly_and_their_runs_resume(tmp_path, monkeypatch):
    monkeypatch.setitem(campaign.DRY_KNOBS, "cpu", {**campaign.DRY_KNOBS["cpu"], "epochs": 1000})
    monkeypatch.setattr(campaign, "CPU_PRIORITY", (cpu_entry("vanilla"),))
    settings = dry_settings(tmp_path)
    # The worker starts a Python with torch before its first batch: seconds on a loaded machine.
    # A budget that leaves room for a few epochs after that keeps the test about resuming, not timing.
    clock = Deadline.after(25 / 60)
    report = campaign.run_cpu_scale(settings, campaign.load_state(settings.work), clock, "not measured")
    assert clock.seconds_left() > 0  # within the call's time
    [run] = report["runs"]
    assert run["outcome"] == "unfinished" and run["images"] > 0, run
    stored = RunStore(settings.work / "runs").run(run["run"])
    assert stored.status == "interrupted" and stored.checkpoint_path("latest").exists()
    first_session = stored.record["sessions"][0]["epochs"]
    assert first_session[1] > 0 and report["not_started"] == []

    # The next session (the same worker, here in this process) continues from the checkpoint.
    spec_file = settings.work / "cpu-scale-workers" / "00" / "spec.json"
    spec = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**spec, "deadline": time.time() + 1.0}))
    run_worker(spec_file)
    sessions = stored.record["sessions"]
    assert len(sessions) == 2 and sessions[1]["epochs"][0] == first_session[1]
    assert json.loads(spec_file.with_name("result.json").read_text())["images"] > 0


def test_evaluate_step_evaluates_complete_cpu_scale_runs_in_plan_order_and_goes_on_next_call(tmp_path):
    from pagcore.config import ExecutionConfig
    from pagcore.evaluate.final import EvaluationConfig
    from pagcore.orchestrate.evaluations import SUBSETS
    from pagcore.orchestrate.experiments import RealDataExperiment

    LARGE_SUBSET, STANDARD_SUBSET = SUBSETS["cifar10"]

    settings = dry_settings(tmp_path, data={"cifar10": "", "stl10": ""})
    data = {"cifar10": campaign.datasets(settings)["cifar10"], "stl10": None}  # STL-10 not staged
    experiment = RealDataExperiment("cifar10", settings.knobs("cpu"), RunStore(settings.work / "runs"), kind="smoke")
    quiet, tiny = ExecutionConfig(kind="smoke", progress=False), EvaluationConfig(pgd_steps=1, picture_images=1)
    rows = ("adversarial_l2", "vanilla", "gaussian_noise")
    runs = {row: experiment.train(row, data["cifar10"], quiet, tiny).run.name for row in rows}

    out_of_time = campaign.run_evaluate(settings, data, Deadline.after(0.0))
    assert [r["skipped"] for r in out_of_time["runs"]] == ["out of time"] * 4  # three in the table, one smoothed

    report = campaign.run_evaluate(settings, data, Deadline.after(10.0))
    assert [(r["run"], r.get("subset")) for r in report["runs"]] == [
        (runs["vanilla"], LARGE_SUBSET),  # a row the argument rests on, first
        (runs["adversarial_l2"], STANDARD_SUBSET),
        (runs["gaussian_noise"], STANDARD_SUBSET),
        (runs["gaussian_noise"], None),  # then its smoothed classifier, on the chapter's subsets
    ]
    assert report["complete"] == "4/4" and report["attacks"] == campaign.evaluation_names()
    smoothed = report["runs"][-1]
    assert {e["name"] for e in smoothed["evaluations"]} == {"pag_score", "certify", "pgd20", "pictures"}
    for line in report["runs"][:-1]:
        created = {e["name"] for e in line["evaluations"] if e.get("created")}
        assert created == set(report["attacks"]), line
        stored = json.loads(Path(line["evaluations"][0]["path"]).read_text())
        assert stored["settings"]["budgets"] == "reduced (tests only)"  # dry mode: never results
    again = campaign.run_evaluate(settings, data, Deadline.after(10.0))
    assert not any(e.get("created") for r in again["runs"] for e in r["evaluations"])


def test_pack_keeps_to_the_return_limits_and_sends_the_rest_next_call(tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "PART_BYTES", 4000)
    monkeypatch.setattr(transfer, "RETURN_TOTAL_LIMIT", 200_000)
    monkeypatch.setattr(transfer, "SAFETY_BYTES", 0)
    settings = dry_settings(tmp_path)
    store = RunStore(settings.work / "runs")
    for n, which in ((1, "latest"), (2, "final"), (3, "final")):
        run = store.create(f"run-{n}", {"scale": "paper"})
        run.write_json("record.json", {"status": "interrupted", "kind": "smoke"})
        run.checkpoint_path(which).write_bytes(bytes([n]) * 10_000)  # 3 parts each
    state = campaign.load_state(settings.work)
    first = campaign.run_pack(settings, state, {"call": "test"})
    assert len(first["files"]) == transfer.RETURN_FILES and "campaign-results.tar.gz" in first["files"]
    assert all((settings.out / f).stat().st_size <= 4000 for f in first["files"] if ".part" in f)
    # The resumable checkpoint first, then final weights, as many as the 8 files allow.
    assert first["checkpoint_parts_sent"][:3] == [f"run-1--checkpoint-latest.pt.part0{i}" for i in (1, 2, 3)]
    assert len(first["checkpoint_parts_sent"]) == 6 and len(first["checkpoint_parts_pending"]) == 3

    # Here: merge the first call's files, then the second call's; checkpoints join when complete.
    repo = tmp_path / "here"
    merged = campaign.unpack_results(settings.out, repo)
    assert merged["checkpoints_joined"] == [
        ".data/checkpoints/run-1/checkpoint-latest.pt",
        ".data/checkpoints/run-2/checkpoint-final.pt",
    ]
    assert merged["checkpoints_waiting_for_parts"] == ["run-3/checkpoint-final.pt"]
    assert (repo / "runs" / "run-1" / "params.json").exists()
    for file in settings.out.iterdir():
        file.unlink()
    second = campaign.run_pack(settings, state, {"call": "test"})
    assert second["checkpoint_parts_pending"] == [] and len(second["checkpoint_parts_sent"]) == 3
    merged = campaign.unpack_results(settings.out, repo)
    assert merged["checkpoints_joined"] == [".data/checkpoints/run-3/checkpoint-final.pt"]
    assert merged["checkpoints_waiting_for_parts"] == []
    for n in (2, 3):
        assert (repo / ".data" / "checkpoints" / f"run-{n}" / "checkpoint-final.pt").read_bytes() == bytes([n]) * 10_000


def test_cpu_scale_checkpoints_come_back_in_the_archive_once_and_finish_the_run_here(tmp_path):
    settings = dry_settings(tmp_path)
    store = RunStore(settings.work / "runs")
    finished = store.create("cifar10-cpu-a", {"scale": "cpu"})
    finished.write_json("record.json", {"status": "complete", "kind": "smoke"})
    finished.checkpoint_path("final").write_bytes(b"f" * 1000)
    unfinished = store.create("cifar10-cpu-b", {"scale": "cpu"})
    unfinished.write_json("record.json", {"status": "interrupted", "kind": "smoke"})
    unfinished.checkpoint_path("latest").write_bytes(b"l" * 1000)
    store.create("cifar10-c", {"scale": "paper"}).checkpoint_path("final").write_bytes(b"p" * 1000)
    # A run of the repository, seeded with its checkpoint and unchanged here: already at home.
    home = RunStore(settings.repo_runs).create("cifar10-cpu-d", {"scale": "cpu"})
    home.write_json("record.json", {"status": "complete", "kind": "smoke"})
    home.write_json("metrics.json", {"clean": 0.1})
    home.checkpoint_path("final").write_bytes(b"d" * 1000)
    campaign.seed_store(settings)
    assert store.run("cifar10-cpu-d").checkpoint_path("final").read_bytes() == b"d" * 1000

    state = campaign.load_state(settings.work)
    packed = campaign.run_pack(settings, state, {"call": "test"})
    assert packed["checkpoints_in_archive"] == [
        "cifar10-cpu-a/checkpoint-final.pt",
        "cifar10-cpu-b/checkpoint-latest.pt",
    ]
    assert packed["checkpoint_parts_sent"] == ["cifar10-c--checkpoint-final.pt.part01"]  # paper scale: in parts
    with tarfile.open(settings.out / campaign.ARCHIVE) as tar:
        names = tar.getnames()
    assert not any("cifar10-cpu-d" in n or n.startswith("runs/cifar10-c/checkpoint") for n in names)

    here = tmp_path / "here"
    stale = here / "runs" / "cifar10-cpu-a" / "checkpoint-latest.pt"  # committed before the run finished
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    campaign.unpack_results(settings.out, here)
    assert (here / "runs" / "cifar10-cpu-a" / "checkpoint-final.pt").read_bytes() == b"f" * 1000
    assert not stale.exists()
    assert (here / "runs" / "cifar10-cpu-b" / "checkpoint-latest.pt").read_bytes() == b"l" * 1000

    # The next call brings only what changed since.
    for file in settings.out.iterdir():
        file.unlink()
    unfinished.checkpoint_path("latest").write_bytes(b"m" * 1000)
    again = campaign.run_pack(settings, state, {"call": "test"})
    assert again["checkpoints_in_archive"] == ["cifar10-cpu-b/checkpoint-latest.pt"]


def test_campaign_needs_no_jupyter_yaml_or_submitit(tmp_path):
    """The GPU machine has no Jupyter, papermill or submitit: ``python -m ops.gpu_window.campaign`` imports
    none of them, nor PyYAML, all the way through training and packing."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "state.json").write_text(json.dumps({"calls": [], "sent": {}, "smoke": {"ok": True}}))
    blocker = (
        "import runpy, sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'IPython', 'ipywidgets', 'papermill', 'myst_nb', 'nbformat', 'yaml',"
        " 'submitit'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['campaign', *sys.argv[1:]]\n"
        "runpy.run_module('ops.gpu_window.campaign', run_name='__main__')\n"
    )
    args = [
        "--dry",
        "--device",
        "cpu",
        "--steps",
        "train,pack",
        "--minutes",
        "0.2",
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(work),
        "--repo-runs",
        str(tmp_path / "none"),
    ]
    out = subprocess.run(
        [sys.executable, "-c", blocker, *args], capture_output=True, text=True, timeout=300, check=False, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["train"][0]["entry"] == "cifar10 vanilla"
    assert "campaign-results.tar.gz" in result["files"]


def test_a_large_results_archive_comes_back_in_parts_and_is_joined_here(tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "PART_BYTES", 600)
    settings = dry_settings(tmp_path)
    run = RunStore(settings.work / "runs").create("run-1", {"scale": "paper"})
    run.write_json("history.json", [{"epoch": n, "loss": 1.0 / (n + 1)} for n in range(40)])
    packed = campaign.run_pack(settings, campaign.load_state(settings.work), {"call": "test"})
    assert "campaign-results.tar.gz.parts.json" in packed["files"] and "campaign-results.tar.gz" not in packed["files"]
    assert all((settings.out / f).stat().st_size <= 600 for f in packed["files"] if ".part0" in f)
    merged = campaign.unpack_results(settings.out, tmp_path / "here")
    assert merged["files_extracted"] >= 3
    assert json.loads((tmp_path / "here" / "runs" / "run-1" / "history.json").read_text())[39]["epoch"] == 39


def run_campaign(*args, timeout=300):
    command = [sys.executable, "-m", "ops.gpu_window.campaign", *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return out, (json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else None)


def test_a_whole_dry_campaign_then_its_files_merged_here(tmp_path):
    """The GPU campaign in dry mode (synthetic data, width 4, CPU), whole: every smoke path, the
    step benchmark, the priority list in slices, the pack; then its files merged here."""
    out_dir = tmp_path / "out"
    out, result = run_campaign(
        "--dry",
        "--device",
        "cpu",
        "--minutes",
        "0.8",
        "--out",
        str(out_dir),
        "--work",
        str(tmp_path / "work"),
        "--repo-runs",
        str(tmp_path / "no-runs"),
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert result["ok"] and result["smoke"] == "ok" and result["benchmark"] in ("loop", "vmap", "replicate")
    report = json.loads((out_dir / "campaign-report.json").read_text())
    paths = [p["path"] for p in report["smoke"]["paths"]]
    assert all(p["ok"] for p in report["smoke"]["paths"]) and len(paths) == 14
    assert any("AutoAttack" in p for p in paths) and any(p.startswith("stl10") for p in paths)
    # Entries in the priority order, each complete but possibly the last (on a fast machine the whole
    # list completes and a last line without an entry says so).
    trained = [t for t in result["train"] if t["entry"]]
    assert [t["entry"] for t in trained] == [e.label for e in PRIORITY[: len(trained)]]
    assert trained and trained[0]["outcome"] == "complete"
    # (a score-based entry is blocked here: the repository this campaign is given holds no denoiser)
    assert all(t["outcome"] in ("complete", "blocked") for t in trained[:-1])
    files = sorted(out_dir.iterdir())
    assert 2 <= len(files) <= 8 and all(f.stat().st_size < 16 * 2**20 for f in files)

    here = tmp_path / "here"
    merged = campaign.unpack_results(out_dir, here)
    assert merged["files_extracted"] > 0
    record = json.loads((here / "runs" / trained[0]["run"] / "record.json").read_text())
    assert record["status"] == "complete" and record["scale"] == "paper" and record["kind"] == "smoke"
    assert record["sessions"][0]["device"].startswith("cpu")
    assert list((here / "runs" / trained[0]["run"] / "artifacts").glob("*.png"))
    assert (here / ".data" / "campaign-reports" / "campaign-report.json").exists()
    assert not list((here / "benchmarks").glob("results/pag_step-cpu-*"))  # a dry benchmark is not a result
