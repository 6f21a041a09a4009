"""The run store: names, identity checks, selection, atomic files, safe checkpoint loading."""

import json
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from pagcore.config import TrainConfig
from pagcore.store import weights
from pagcore.store.provenance import run_record, write_json_atomic
from pagcore.store.runs import RunStore, run_name
from pagcore.train.trainer import run_name_for

REPO = Path(__file__).resolve().parent.parent


def class_mean(**knobs):
    return TrainConfig.from_flat({"source": "class_mean", **knobs}).resolve()


def test_names_are_readable_and_determined_by_the_parameters():
    a = run_name_for(class_mean(), "real")
    assert a.startswith("cifar10-class_mean-lam0.4-e100-s0-")
    assert a == run_name_for(class_mean(), "real")
    assert a != run_name_for(class_mean(seed=1), "real")
    assert a != run_name_for(class_mean(lr_milestones=[0.6, 0.8]), "real")
    assert run_name_for(class_mean(scale="cpu", width=16), "real").startswith("cifar10-cpu-w16-class_mean-")
    assert run_name("weird name/with:chars", {}).startswith("weird_name_with_chars-")


def test_the_readable_part_names_what_tells_the_books_rows_apart():
    def readable(**knobs):
        return TrainConfig.from_flat(knobs).resolve().readable_name()

    assert readable(scale="cpu", source="class_mean") == "cifar10-cpu-class_mean-lam0.4-e20-s0"  # the preset's k
    assert readable(scale="cpu", source="class_mean", classes_per_image=5) == "cifar10-cpu-class_mean-lam0.4-k5-e20-s0"
    assert readable(source="class_mean", classes_per_image=2) == "cifar10-class_mean-lam0.4-k2-e100-s0"
    assert readable(scale="cpu", source="class_mean", classes_per_image=10).endswith("-lam0.4-k10-e20-s0")
    assert readable(source="class_mean", classes_per_image=10) == "cifar10-class_mean-lam0.4-e100-s0"  # the paper's
    assert readable(source="class_mean", gradient="log_softmax") == "cifar10-class_mean-lam0.4-log_softmax-e100-s0"
    for threat in ("linf", "l2"):
        teacher = f"cifar10-cpu-adversarial-{threat}-e20-s0-0123456789"
        name = readable(scale="cpu", source="rigd", teacher=teacher)
        assert name == f"cifar10-cpu-rigd-{threat}-lam0.4-e20-s0"
        assert readable(scale="cpu", source="rigd", teacher=f"runs/{teacher}") == name  # a path names it too
    assert readable(scale="cpu", source="rigd", teacher="my-robust-model").startswith("cifar10-cpu-rigd-lam0.4")


def test_every_stored_run_is_named_by_its_identity_and_its_rows_read_apart():
    """The run store as committed: each directory has the name its parameters give, and within a
    dataset and scale no two real runs share a readable part (tables and legends show that part)."""
    readable: dict[tuple, list[str]] = {}
    for run in RunStore(REPO / "runs").runs():
        config = TrainConfig.from_identity(run.params)
        assert run.name == run_name_for(config, run.kind), run.name
        key = (config.data.dataset, config.scale, run.kind)
        readable.setdefault(key, []).append(config.readable_name())
    for key, names in readable.items():
        assert len(names) == len(set(names)), (key, sorted(names))


def test_smoke_and_real_runs_of_one_configuration_never_share_a_name():
    config = class_mean()
    smoke = run_name_for(config, "smoke")
    assert smoke.startswith("cifar10-class_mean-lam0.4-e100-s0-smoke-")
    assert smoke != run_name_for(config, "real")


def test_create_refuses_to_mix_parameters(tmp_path):
    store = RunStore(tmp_path)
    store.create("r", {"a": 1})
    store.create("r", {"a": 1})
    with pytest.raises(ValueError, match="different parameters"):
        store.create("r", {"a": 2})


def test_find_and_select(tmp_path):
    store = RunStore(tmp_path)
    real = store.create("real-run", {"objective": "cross_entropy", "dataset": "cifar10"})
    real.write_json("record.json", {"kind": "real", "status": "complete"})
    real.write_json("metrics.json", {"clean": 0.9})
    smoke = store.create("smoke-run", {"objective": "cross_entropy", "dataset": "cifar10"})
    smoke.write_json("record.json", {"kind": "smoke", "status": "complete"})
    smoke.write_json("metrics.json", {"clean": 0.1})
    unfinished = store.create("unfinished", {"objective": "cross_entropy", "dataset": "cifar10"})
    unfinished.write_json("record.json", {"kind": "real", "status": "interrupted"})
    assert [r.name for r in store.select(objective="cross_entropy")] == ["real-run"]
    assert [r.name for r in store.select(kind="smoke")] == ["smoke-run"]
    assert store.select(objective="pag") == []
    assert store.find("real-run").path == real.path
    assert store.find(str(real.path)).name == "real-run"
    with pytest.raises(FileNotFoundError, match="no run 'missing'"):
        store.find("missing")


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoints_load_weights_only(tmp_path):
    run = RunStore(tmp_path).create("r", {})
    run.save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 3, "history": [{"loss": 1.0}]})
    state = run.load_checkpoint()
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.ones(2))
    torch.save({"evil": Payload()}, run.checkpoint_path("latest"))
    with pytest.raises(pickle.UnpicklingError):
        run.load_checkpoint()


def test_atomic_json_leaves_no_temporary_files(tmp_path):
    write_json_atomic(tmp_path / "a" / "x.json", {"b": 1})
    write_json_atomic(tmp_path / "a" / "x.json", {"b": 2})
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]
    assert (tmp_path / "a" / "x.json").read_text().strip().endswith("}")


def test_record_carries_provenance():
    record = run_record({"lam": 1.0}, wall_seconds=1.23456, started="2026-01-01T00:00:00+00:00", kind="smoke")
    assert record["parameters"] == {"lam": 1.0}
    assert record["wall_seconds"] == 1.235 and record["kind"] == "smoke"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    assert len(head) == 40 and record["git"].removesuffix("-dirty") == head[: len(record["git"].removesuffix("-dirty"))]
    assert len(record["git"].removesuffix("-dirty")) >= 7
    assert record["device"].startswith("cpu") and record["torch"] == torch.__version__


def test_only_code_makes_a_record_dirty(tmp_path):
    """Changed code marks results ``-dirty``; a pilot run or benchmark result being written does not."""
    from pagcore.store.provenance import git_revision

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    for name in ("pagcore/a.py", "benchmarks/pilot_runs/r/history.json", "benchmarks/results/b.json", "book/c.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "x")
    clean = git_revision(tmp_path)
    assert len(clean) == 40
    for name in ("benchmarks/pilot_runs/r/history.json", "benchmarks/results/b.json", "book/c.md"):
        (tmp_path / name).write_text("1")
    assert git_revision(tmp_path) == clean
    (tmp_path / "pagcore/a.py").write_text("1")
    assert git_revision(tmp_path) == clean + "-dirty"


def test_records_name_the_code_the_process_loaded_not_what_git_says_later(monkeypatch):
    """A table trains run after run in one process: a commit made meanwhile must not be recorded as
    the code of its later runs, so the revision is read once, when pagcore is imported."""
    from pagcore.store import provenance

    loaded = provenance.running_revision()
    assert loaded == provenance.git_revision() or loaded.endswith("-dirty") or loaded == "unknown"

    def no_git(*args, **kwargs):
        raise OSError("git is gone")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert provenance.git_revision() == "unknown"  # asking git now fails...
    assert provenance.running_revision() == loaded  # ...but the loaded code's revision was read at import


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def _repository_with_a_run(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.org")
    _git(root, "config", "user.name", "t")
    run = RunStore(root / "runs").create("cifar10-cpu-vanilla-e20-s0-abc", {"dataset": "cifar10", "scale": "cpu"})
    run.save_checkpoint({"model": {"w": torch.arange(6.0)}}, "final")
    return root, run


def test_archived_weights_leave_the_index_and_come_back_from_history(tmp_path):
    root, run = _repository_with_a_run(tmp_path)
    with pytest.raises(weights.WeightsError, match="git add -f"):  # not in a commit: archiving would lose it
        weights.archive(run.path)
    assert weights.unarchived(root / "runs") == [run.name]  # ignored by git, so only this says so
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "run")
    assert weights.unarchived(root / "runs") == []  # tracked
    record = weights.archive(run.path)
    assert weights.unarchived(root / "runs") == []  # archived
    tracked = subprocess.run(["git", "-C", root, "ls-files"], capture_output=True, text=True).stdout.split()
    assert "runs/cifar10-cpu-vanilla-e20-s0-abc/checkpoint-final.pt" not in tracked
    assert record["bytes"] == run.checkpoint_path("final").stat().st_size
    run.checkpoint_path("final").unlink()
    assert run.trained  # restorable counts as trained: no run is trained twice
    assert torch.equal(run.load_checkpoint("final")["model"]["w"], torch.arange(6.0))
    assert run.checkpoint_path("final").exists()


def test_a_copy_without_git_history_has_no_weights_to_restore(tmp_path):
    # A GPU machine is sent the tree without .git: an archived run there is not trained.
    import shutil

    root, run = _repository_with_a_run(tmp_path)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "run")
    weights.archive(run.path)
    copy = RunStore(tmp_path / "elsewhere").run(run.name)
    shutil.copytree(run.path, copy.path)
    copy.checkpoint_path("final").unlink()
    assert not copy.trained
    with pytest.raises(FileNotFoundError, match="not inside a git clone"):
        copy.load_model()


def test_only_cpu_scale_weights_are_archived(tmp_path):
    root, _ = _repository_with_a_run(tmp_path)
    denoiser = RunStore(root / "runs" / "denoisers").create("cifar10-denoiser-w16", {"model": "denoiser"})
    denoiser.save_checkpoint({"model": {}}, "final")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "runs")
    with pytest.raises(weights.WeightsError, match="not a CPU-scale run"):
        weights.archive(denoiser.path)


def test_restoring_refuses_a_missing_or_altered_blob(tmp_path):
    root, run = _repository_with_a_run(tmp_path)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "run")
    weights.archive(run.path)
    run.checkpoint_path("final").unlink()
    record = json.loads((run.path / weights.RECORD).read_text())
    write_json_atomic(run.path / weights.RECORD, {**record, "sha256": "0" * 64})
    with pytest.raises(weights.WeightsError, match="does not match"):
        weights.restore(run.path)
    write_json_atomic(run.path / weights.RECORD, {**record, "git_blob": "1" * 40})
    assert not run.trained
    with pytest.raises(FileNotFoundError, match="unshallow"):
        run.load_checkpoint("final")
    assert not run.checkpoint_path("final").exists()


def test_a_run_without_weights_or_record_is_not_trained(tmp_path):
    run = RunStore(tmp_path).create("r", {"dataset": "cifar10"})
    assert not run.trained and run.load_checkpoint("final") is None
    with pytest.raises(weights.WeightsError, match="no final weights"):
        weights.restore(run.path)


def test_every_committed_run_with_final_weights_keeps_them_out_of_the_tree():
    # The tree travels with every GPU call: final weights live in history, named by weights.json.
    tracked = subprocess.run(["git", "-C", REPO, "ls-files", "runs"], capture_output=True, text=True).stdout.split()
    assert not [path for path in tracked if path.endswith("checkpoint-final.pt") and "/denoisers/" not in path]
    for run in RunStore(REPO / "runs").select(kind=None):
        short = "-e5-" in run.name  # the gradient-kind comparison's short runs keep no weights at all
        assert short or weights.is_archived(run.path), f"{run.name}: final weights neither archived nor kept"
        if weights.is_archived(run.path):  # and this clone holds what each record names
            blob = json.loads((run.path / weights.RECORD).read_text())["git_blob"]
            assert subprocess.run(["git", "-C", REPO, "cat-file", "-e", f"{blob}^{{blob}}"]).returncode == 0, run.name
