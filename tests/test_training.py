"""Real-data training on tiny synthetic data: every objective and source, RIGD teachers, resume, the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pagcore.base.validation import ConfigError
from pagcore.config import ExecutionConfig, TrainConfig
from pagcore.data import save_npz, synthetic_dataset
from pagcore.evaluate.final import EvaluationConfig, load_pag_grid
from pagcore.paper.models import build_model
from pagcore.paper.rigd import PrecomputedGradients, teacher_gradients
from pagcore.store.runs import RunStore
from pagcore.train.trainer import StepConfig, train, training_step

REPO = Path(__file__).resolve().parent.parent
# Tiny settings: code tests, never results. 64 training images in batches of 32.
TINY = dict(dataset="cifar10", epochs=1, width=4, batch_size=32, pool_size=8)
EVAL = EvaluationConfig(pgd_steps=1, picture_images=2)
SOURCE_KNOBS = {
    "vanilla": {"objective": "cross_entropy"},
    **{s: {"objective": "pag", "source": s} for s in ("one_image", "class_mean", "nearest_neighbor")},
}


def tiny(**knobs) -> TrainConfig:
    return TrainConfig.from_flat({**TINY, **knobs})


def train_quietly(config, data, store, **options):
    return train(config, data, store, ExecutionConfig(progress=False, **options), EVAL)


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset("cifar10", 64, 20, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def teachers(data, store):
    """Tiny adversarially trained models, one per threat model."""
    return {
        threat: train_quietly(tiny(objective="adversarial", threat=threat, steps=2), data, store).run
        for threat in ("linf", "l2")
    }


def check_complete(run):
    assert run.complete and run.kind == "smoke"
    metrics = run.metrics
    for key in ("clean", "linf", "l2"):  # a count of the 20 test images, not just any number in [0, 1]
        assert 0 <= round(metrics[key] * 20) <= 20 and abs(metrics[key] * 20 - round(metrics[key] * 20)) < 1e-9
    assert (
        metrics["test_images"] == 20
        and metrics["test_set"] == "20-image class-balanced subset of the CIFAR-10 test set"
    )
    assert len(run.history) == run.params["epochs"]
    assert (run.artifacts / "pag_grid.png").stat().st_size > 0
    grid = load_pag_grid(run.artifacts)
    assert grid.shape == (2, 11, 3, 32, 32) and 0 <= grid.min() and grid.max() <= 1
    assert torch.equal(grid, (grid * 255).round() / 255)  # stored as 8-bit pixels
    record = run.record
    for key in ("git", "device", "torch", "started", "wall_seconds"):
        assert key in record["sessions"][-1] or key in record
    assert record["wall_seconds"] > 0


@pytest.mark.parametrize("row", list(SOURCE_KNOBS))
def test_every_model_free_source_completes(data, store, row):
    run = train_quietly(tiny(**SOURCE_KNOBS[row]), data, store).run
    check_complete(run)
    assert (
        run.params.get("lam", 0.0)
        == {"vanilla": 0.0, "one_image": 0.5, "class_mean": 0.4, "nearest_neighbor": 0.4}[row]
    )
    cosine = run.history[0]["cosine"]
    assert (cosine == 0.0) if row == "vanilla" else (0.0 < cosine <= 20.0)
    assert run.metrics["settings"]["pgd_steps"] == 1  # the evaluation's settings live with its numbers
    assert "pgd_steps" not in run.params  # and not in the run's identity


@pytest.mark.parametrize("threat", ["linf", "l2"])
@pytest.mark.parametrize("targets", ["precompute", "on_the_fly"])
def test_rigd_with_tiny_teachers(data, store, teachers, threat, targets):
    check_complete(teachers[threat])
    config = tiny(objective="pag", source="rigd", teacher=teachers[threat].name, rigd_targets=targets)
    run = train_quietly(config, data, store).run
    check_complete(run)
    assert run.params["teacher"] == teachers[threat].name


def test_precomputed_rigd_targets_are_unit_teacher_gradients(data, teachers):
    teacher = teachers["l2"].load_model()
    table = PrecomputedGradients.from_teacher(teacher, data.x_train[:6], 10, progress=False).table
    assert table.shape == (6, 10, 3, 32, 32) and table.dtype == torch.float16
    norms = table.float().flatten(2).norm(dim=2)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=2e-3, rtol=0)
    direct = teacher_gradients(teacher, data.x_train[:6].float() / 255, torch.arange(10).expand(6, 10))
    cosine = torch.nn.functional.cosine_similarity(direct.flatten(2), table.float().flatten(2), dim=2)
    assert (cosine > 0.999).all()


def test_rigd_refuses_a_teacher_that_is_not_adversarially_trained(data, store):
    vanilla = train_quietly(tiny(objective="cross_entropy"), data, store).run
    with pytest.raises(ConfigError, match="not an adversarially trained run"):
        train_quietly(tiny(objective="pag", source="rigd", teacher=vanilla.name), data, store)


def test_sampled_classes_and_other_strategies_train(data, store):
    for strategy in ("vmap", "replicate"):
        result = train_quietly(tiny(classes_per_image=2), data, RunStore(store.root / strategy), strategy=strategy)
        assert result.run.complete


def test_a_complete_run_is_reused_unless_retrained(data, store):
    config = tiny(objective="cross_entropy")
    first = train_quietly(config, data, store).run
    sessions = len(first.record["sessions"])
    again = train_quietly(config, data, store).run
    assert again.path == first.path and len(again.record["sessions"]) == sessions
    retrained = train_quietly(config, data, store, retrain=True).run
    assert len(retrained.record["sessions"]) == 1 and retrained.complete


def test_a_trained_run_is_evaluated_later_without_retraining(data, tmp_path):
    store = RunStore(tmp_path)
    trained = train_quietly(tiny(objective="cross_entropy"), data, store, evaluate=False).run
    assert trained.status == "trained" and trained.metrics is None
    assert not trained.checkpoint_path("latest").exists()  # a finished run keeps its final weights only
    evaluated = train_quietly(tiny(objective="cross_entropy"), data, store).run
    assert evaluated.complete and evaluated.record["sessions"][-1]["epochs"] == [1, 1]


def final_state(run):
    return run.load_checkpoint("final")["model"]


def assert_same_results(a, b):
    for key, tensor in final_state(a).items():
        assert torch.equal(tensor, final_state(b)[key]), key

    def without(key, entries):
        return [{k: v for k, v in e.items() if k != key} for e in entries]

    assert without("seconds", a.history) == without("seconds", b.history)
    assert without("eval_seconds", [a.metrics]) == without("eval_seconds", [b.metrics])


def test_time_budget_stops_cleanly_and_resume_matches(data, tmp_path):
    config = tiny(objective="pag", source="nearest_neighbor", epochs=2)
    whole = train_quietly(config, data, RunStore(tmp_path / "whole")).run
    pieces = RunStore(tmp_path / "pieces")
    sessions = 0
    while True:
        result = train_quietly(config, data, pieces, max_minutes=1e-6)  # stops after one step
        sessions += 1
        if result.finished:
            break
        assert result.run.status == "interrupted"
    assert sessions == 4  # 2 epochs x 2 steps, one step per session
    assert_same_results(whole, result.run)
    assert len(result.run.record["sessions"]) == 4
    log = (result.run.path / "train.log").read_text()
    assert log.count("session started") == 4 and log.count("epoch 2/2:") == 1 and "training finished" in log


def test_an_epoch_spanning_sessions_reports_its_whole_time(data, tmp_path):
    config = tiny(objective="cross_entropy")
    store = RunStore(tmp_path)
    stopped = train_quietly(config, data, store, max_minutes=1e-6).run  # one step of the epoch's two
    state = stopped.load_checkpoint("latest")
    assert state["step"] == 1 and state["epoch_seconds"] > 0
    state["epoch_seconds"] = 1000.0  # as if the first session had taken long
    stopped.save_checkpoint(state)
    finished = train_quietly(config, data, store).run
    assert finished.history[0]["seconds"] >= 1000.0


def git(*args, cwd):
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_cpu_scale_run_committed_mid_training_continues_in_a_fresh_clone(data, tmp_path):
    """Stop a CPU-scale run after a step, commit its directory with the repository's .gitignore,
    clone, resume in the clone: the result equals an uninterrupted run's, and once complete only
    the final weights are left to commit."""
    config = tiny(scale="cpu", objective="pag", source="class_mean", epochs=2)
    whole = train_quietly(config, data, RunStore(tmp_path / "whole"), kind="smoke").run

    origin = tmp_path / "origin"
    origin.mkdir()
    shutil.copy(REPO / ".gitignore", origin / ".gitignore")
    git("init", "-q", cwd=origin)
    stopped = train_quietly(config, data, RunStore(origin / "runs"), kind="smoke", max_minutes=1e-6)
    assert not stopped.finished
    git("add", "-A", cwd=origin)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run, interrupted", cwd=origin)
    tracked = git("ls-files", cwd=origin)
    assert f"runs/{stopped.run.name}/checkpoint-latest.pt" in tracked  # CPU-scale checkpoints travel in git

    clone = tmp_path / "clone"
    git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    resumed = train_quietly(config, data, RunStore(clone / "runs"), kind="smoke")
    assert resumed.finished and len(resumed.run.record["sessions"]) == 2
    assert_same_results(whole, resumed.run)
    files = {p.name for p in resumed.run.path.iterdir()}
    assert "checkpoint-final.pt" in files and "checkpoint-latest.pt" not in files


def test_paper_scale_checkpoints_stay_out_of_git(tmp_path):
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    git("init", "-q", cwd=tmp_path)
    for name in ("cifar10-class_mean-lam0.4-e100-s0-0123456789", "cifar10-cpu-class_mean-lam0.4-e20-s0-0123456789"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "checkpoint-latest.pt").write_bytes(b"x")
    ignored = git("status", "--porcelain", "--ignored", "--untracked-files=all", cwd=tmp_path)
    assert "!! runs/cifar10-class_mean-lam0.4-e100-s0-0123456789/checkpoint-latest.pt" in ignored
    assert "?? runs/cifar10-cpu-class_mean-lam0.4-e20-s0-0123456789/checkpoint-latest.pt" in ignored


def cli(*args):
    return [sys.executable, "-m", "pagcore", *args]


KILL_ARGS = [
    "train",
    "--dataset",
    "cifar10",
    "--objective",
    "pag",
    "--source",
    "nearest_neighbor",
    "--epochs",
    "3",
    "--width",
    "4",
    "--batch-size",
    "16",
    "--pool-size",
    "8",
    "--pgd-steps",
    "1",
    "--picture-images",
    "1",
    "--checkpoint-every",
    "1",
    "--no-progress",
    "--device",
    "cpu",
]


def test_resume_after_kill_mid_epoch_reaches_the_same_result(tmp_path):
    npz = save_npz(synthetic_dataset("cifar10", 96, 20, seed=3), tmp_path / "data.npz")
    args = [*KILL_ARGS, "--data", str(npz)]
    whole = subprocess.run(cli(*args, "--runs", str(tmp_path / "whole")), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    name = json.loads(whole.stdout.strip().splitlines()[-1])["run"]

    killed_root = tmp_path / "killed"
    process = subprocess.Popen(
        cli(*args, "--runs", str(killed_root)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    checkpoint = killed_root / name / "checkpoint-latest.pt"
    position = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.exists():
            state = torch.load(checkpoint, weights_only=True)
            if state["epoch"] == 1 and state["step"] >= 2:  # in the middle of the second epoch
                position = (state["epoch"], state["step"])
                os.kill(process.pid, signal.SIGKILL)
                break
        time.sleep(0.01)
    process.wait(timeout=60)
    assert position is not None, "the run ended before it could be killed mid-epoch"
    assert process.returncode == -signal.SIGKILL
    store = RunStore(killed_root)
    killed = store.run(name).record
    assert killed["status"] == "running" and not store.run(name).complete
    # The killed session is on record up to its last checkpoint (at least epoch 1, in the second epoch).
    (session,) = killed["sessions"]
    assert session["epochs"][0] == 0 and session["epochs"][1] >= 1 and 0 < session["wall_seconds"]
    assert killed["wall_seconds"] == session["wall_seconds"]

    resumed = subprocess.run(cli(*args, "--runs", str(killed_root)), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    run = store.run(name)
    assert run.complete
    first, second = run.record["sessions"]
    assert first["ended"].startswith("killed") and "ended" not in second
    assert second["epochs"][0] == 1  # the second session began inside epoch 2
    assert run.record["wall_seconds"] == pytest.approx(first["wall_seconds"] + second["wall_seconds"], abs=2e-3)
    assert_same_results(RunStore(tmp_path / "whole").run(name), run)


def test_a_session_that_raises_is_on_record_as_failed_and_the_run_resumes(data, tmp_path, monkeypatch):
    import pagcore.train.trainer

    def broken_evaluation(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    store = RunStore(tmp_path)
    monkeypatch.setattr(pagcore.train.trainer, "evaluate_run", broken_evaluation)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_quietly(tiny(), data, store)
    (run,) = store.runs()
    assert run.record["status"] == "interrupted" and not run.complete
    assert run.record["sessions"][-1]["ended"] == "failed: RuntimeError: out of memory, say"

    monkeypatch.undo()
    assert train_quietly(tiny(), data, store).run.complete
    failed, resumed = run.record["sessions"]
    assert failed["ended"].startswith("failed") and "ended" not in resumed  # never relabelled "killed"
    assert resumed["epochs"] == [TINY["epochs"]] * 2  # trained before: the new session only evaluated


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--dataset", "imagenet", "--synthetic", "4", "4"],
            "invalid choice: 'imagenet' (choose from 'cifar10', 'stl10')",
        ),
        (["--source", "nn", "--synthetic", "4", "4"], "invalid choice: 'nn'"),
        (["--batch-size", "0", "--synthetic", "4", "4"], "batch_size must be an integer >= 1"),
        (["--lam", "-0.5", "--synthetic", "4", "4"], "lam must be a finite number >= 0"),
        (["--data", "/no/such/cifar.npz"], "cifar10 was not found at '/no/such/cifar.npz'"),
        (["--source", "rigd", "--synthetic", "4", "4"], "teacher must name"),
        ([], "data is required"),
    ],
)
def test_cli_rejects_bad_parameters_before_any_compute(tmp_path, args, message):
    started = time.monotonic()
    out = subprocess.run(cli("train", "--runs", str(tmp_path), *args), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())  # no run directory was created
    assert time.monotonic() - started < 60


def test_lr_schedule_defaults_to_the_authors_step_schedule():
    schedule = tiny(epochs=100).resolve().schedule
    assert [schedule.lr_at(e) for e in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4])


def test_a_provisional_preset_refuses_real_runs(data, tmp_path, monkeypatch):
    from pagcore import config as cfg

    monkeypatch.setitem(
        cfg.SCALES["cpu"], "cifar10", cfg.ScalePreset(8, 1, 2, 3, final=False, note="awaiting its pilot")
    )
    as_real = __import__("pagcore.data", fromlist=["load_dataset"]).load_dataset(
        "cifar10", save_npz(data, tmp_path / "d.npz")
    )
    with pytest.raises(ConfigError, match="provisional"):
        train_quietly(tiny(scale="cpu"), as_real, RunStore(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_training_step_changes_the_weights(data):
    from pagcore.paper.models import build_model
    from pagcore.paper.targets import build_target_source
    from pagcore.train.trainer import StepConfig

    model = build_model("cifar10", width=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    source = build_target_source("class_mean", data.x_train, data.y_train, 10, center=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    index = torch.arange(8)
    loss = training_step(
        model,
        optimizer,
        data.x_train[index],
        data.y_train[index],
        index,
        source,
        StepConfig(num_classes=10, lam=0.4),
        torch.Generator().manual_seed(0),
    )
    assert loss.total.requires_grad is False and torch.isfinite(loss.total)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_a_smoke_run_is_never_resumed_as_a_real_one(tmp_path):
    """Same configuration, synthetic data then "real" (npz) data: two separate runs."""
    store = RunStore(tmp_path / "runs")
    config = tiny(objective="cross_entropy", width=64)
    synthetic = synthetic_dataset("cifar10", 64, 20)
    smoke = train_quietly(config, synthetic, store, max_minutes=1e-6).run
    assert smoke.kind == "smoke" and smoke.status == "interrupted"
    from pagcore.data import load_dataset

    as_real = load_dataset("cifar10", save_npz(synthetic, tmp_path / "d.npz"))  # read like real data
    real = train_quietly(config, as_real, store, max_minutes=1e-6).run
    assert real.path != smoke.path and real.kind == "real"
    assert len(real.record["sessions"]) == 1


def test_training_cli_needs_no_jupyter(tmp_path):
    """The GPU machines have torch, torchvision, numpy, matplotlib and tqdm but no Jupyter:
    `python -m pagcore train` must not import IPython, ipywidgets, papermill or myst_nb."""
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'IPython', 'ipywidgets', 'papermill', 'myst_nb', 'nbformat'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from pagcore.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [
        "train",
        "--source",
        "class_mean",
        "--synthetic",
        "32",
        "8",
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
        "--runs",
        str(tmp_path),
    ]
    out = subprocess.run([sys.executable, "-c", blocker, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["status"] == "complete"


def test_gaussian_noise_training_makes_a_named_base_classifier_and_noise_changes_the_step(data, store):
    run = train_quietly(tiny(objective="gaussian_noise", noise_sigma=0.5), data, store).run
    check_complete(run)
    assert run.params["noise_sigma"] == 0.5 and "-noise0.5-" in run.name
    with pytest.raises(ConfigError, match="lam must be 0"):
        tiny(objective="gaussian_noise", lam=0.4).resolve()
    # The step's loss is the cross-entropy of the images plus σ times the step generator's first draw.
    images, labels, index = data.x_train[:8], data.y_train[:8], torch.arange(8)
    torch.manual_seed(0)
    model = build_model("cifar10", 10, width=4).eval()  # eval: batch statistics do not move between the passes
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    settings = StepConfig(num_classes=10, lam=0.0, augment=False, noise_sigma=0.5)
    loss = training_step(model, optimizer, images, labels, index, None, settings, torch.Generator().manual_seed(1))
    x = images.float() / 255
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x + 0.5 * noise), labels)
        clean = torch.nn.functional.cross_entropy(model(x), labels)
    assert loss.cross_entropy.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(loss.cross_entropy.item() - clean.item()) > 1e-4  # and the noise did change it


def test_adversarial_training_takes_the_pag_term_when_given_a_lambda(data, store, teachers):
    plain = tiny(objective="adversarial", threat="linf", steps=2).resolve()
    boosted = tiny(objective="adversarial", threat="linf", steps=2, source="nearest_neighbor", lam=0.4).resolve()
    assert "source" not in plain.identity() and plain.readable_name().endswith("-adversarial-linf-e1-s0")
    assert boosted.identity()["source"] == "nearest_neighbor" and boosted.identity()["adversary"]["threat"] == "linf"
    assert "-adversarial-linf-nearest_neighbor-lam0.4-" in boosted.readable_name()
    run = train_quietly(boosted, data, store).run
    check_complete(run)
    assert run.name != teachers["linf"].name  # another run, beside the plain teacher
    history = json.loads((run.path / "history.json").read_text())
    assert history[-1]["cosine"] > 0  # the cosine term was computed and trained on


def test_a_vit_trains_with_the_pag_term_and_comes_back_from_the_store(data, store):
    run = train_quietly(tiny(architecture="vit", width=8, depth=1, source="class_mean"), data, store).run
    check_complete(run)
    assert "-vit1-w8-" in run.name and run.params["architecture"] == "vit"
    model = run.load_model()
    assert type(model).__name__ == "ViT" and len(model.blocks) == 1
