"""The one queue that makes missing runs: in order, teachers first, passing over what cannot
start, stopping at its deadline and going on from there the next time."""

from pagcore.base.deadline import Deadline
from pagcore.config import ExecutionConfig
from pagcore.data import synthetic_dataset
from pagcore.evaluate.final import EvaluationConfig
from pagcore.orchestrate.book_runs import BookRun
from pagcore.orchestrate.queue import RunQueue
from pagcore.orchestrate.workers import DataSource
from pagcore.store.runs import RunStore

TINY = {"width": 4, "epochs": 1, "batch_size": 16, "steps": 1}
QUIET = ExecutionConfig(progress=False, kind="smoke")
FAST = EvaluationConfig(pgd_steps=1, picture_images=1)


def queue(tmp_path, *entries):
    return RunQueue(entries, RunStore(tmp_path / "runs"), kind="smoke", knobs=TINY)


def test_the_queue_makes_what_is_missing_teachers_first_and_then_nothing(tmp_path):
    images = synthetic_dataset("cifar10", 32, 8)
    rows = queue(tmp_path, BookRun("table", "cifar10", "vanilla"), BookRun("table", "cifar10", "rigd_l2"))
    assert [rows.status(e).state for e in rows.entries] == ["missing", "missing"]
    made = rows.make(lambda _: images, Deadline.after(None), QUIET, FAST)
    assert [o["outcome"] for o in made] == ["complete", "complete"]
    teacher = rows.store.run(rows.store.run(made[1]["run"]).params["teacher"])
    assert teacher.complete and teacher.params["adversary"]["threat"] == "l2"
    assert rows.make(lambda _: images, Deadline.after(None), QUIET, FAST) == []  # nothing left to make


def test_an_entry_without_data_is_passed_over_and_a_passed_deadline_starts_nothing(tmp_path):
    images = synthetic_dataset("cifar10", 32, 8)
    rows = queue(tmp_path, BookRun("table", "stl10", "vanilla"), BookRun("table", "cifar10", "vanilla"))
    assert rows.make(lambda _: images, Deadline.after(0), QUIET, FAST) == []
    assert not list((tmp_path / "runs").glob("*/params.json"))
    made = rows.make(lambda name: images if name == "cifar10" else None, Deadline.after(None), QUIET, FAST)
    assert [(o["entry"], o["outcome"]) for o in made] == [("stl10 vanilla", "blocked"), ("cifar10 vanilla", "complete")]


def test_a_run_cut_off_by_its_deadline_goes_on_from_its_checkpoint(tmp_path):
    images = synthetic_dataset("cifar10", 64, 8)
    rows = queue(tmp_path, BookRun("table", "cifar10", "vanilla"))
    # Slices of a microsecond stop after one step each. The clock is asked before the entry, then
    # before each slice: time for three slices, then the deadline has passed.
    clock = iter([3600.0] * 4 + [0.0] * 10)

    class ThreeSlices(Deadline):
        def seconds_left(self) -> float:
            return next(clock)

    first = rows.make(lambda _: images, ThreeSlices(0.0), QUIET, FAST, slice_minutes=1e-7, shortest_slice_seconds=1)
    assert [o["outcome"] for o in first] == ["unfinished"] and len(first[0]["slices"]) == 3
    run = rows.store.run(first[0]["run"])
    assert run.checkpoint_path("latest").exists() and not run.complete
    again = rows.make(lambda _: images, Deadline.after(None), QUIET, FAST)
    assert [o["outcome"] for o in again] == ["complete"]
    assert len(run.record["sessions"]) == 4  # three slices, then the rest


def test_two_workers_train_side_by_side_and_a_rigd_student_waits_for_its_teacher(tmp_path):
    alone = queue(tmp_path, BookRun("table", "cifar10", "rigd_l2"))
    assert [e.label for e in alone.with_teachers()] == ["cifar10 adversarial_l2", "cifar10 rigd_l2"]

    # The student first: it waits, while the two entries after it train side by side.
    entries = [BookRun("table", "cifar10", row) for row in ("rigd_l2", "vanilla", "adversarial_l2")]
    rows = queue(tmp_path, *entries)
    sources = {"cifar10": DataSource(synthetic=(32, 8))}
    report = rows.make_side_by_side(sources, Deadline.after(3), QUIET, FAST, workers=2, folder=tmp_path / "workers")
    made = {r["entry"]: r for r in report["runs"]}
    student, vanilla, teacher = (made[e.label] for e in entries)
    assert all(r["outcome"] == "complete" and r["images"] == 32 for r in made.values()), report["runs"]
    assert max(vanilla["launched"], teacher["launched"]) < min(vanilla["exited"], teacher["exited"])
    teacher_record = rows.store.run(teacher["run"]).path / "record.json"
    assert student["launched"] >= teacher_record.stat().st_mtime  # once its teacher's record said complete
    assert rows.store.run(student["run"]).params["teacher"] == teacher["run"]
    assert report["complete"] == report["of"] == 3 and report["blocked"] == report["waiting"] == []
    assert report["not_started"] == [] and report["images_per_second"] > 0
