"""Real-data training on tiny synthetic data: every method, RIGD teachers, resume, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pagcore.data import save_npz, synthetic_dataset
from pagcore.rigd import PrecomputedGradients, teacher_gradients
from pagcore.runs import RunStore
from pagcore.training import TrainConfig, load_run_model, train, training_step
from pagcore.validation import ConfigError

# Tiny settings: code tests, never results. 64 training images in batches of 32.
TINY = dict(dataset="cifar10", epochs=1, width=4, batch_size=32, pool_size=8, eval_pgd_steps=1, picture_images=2)


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset("cifar10", 64, 20, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def teachers(data, store):
    """Tiny adversarially trained models, one per threat model."""
    runs = {}
    for norm in ("linf", "l2"):
        runs[norm] = train(TrainConfig(method="adversarial", adv_norm=norm, adv_steps=2, **TINY), data, store, progress=False).run
    return runs


def check_complete(run):
    assert run.complete and run.kind == "smoke"
    metrics = run.metrics
    for key in ("clean", "linf", "l2"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["test_images"] == 20
    assert len(run.history) == run.params["epochs"]
    assert (run.artifacts / "pag_grid.png").stat().st_size > 0
    grid = torch.load(run.artifacts / "pag_grid.pt", weights_only=True)["grid"]
    assert grid.shape == (2, 11, 3, 32, 32)
    record = run.record
    for key in ("git", "device", "torch", "started", "wall_seconds"):
        assert key in record["sessions"][-1] or key in record
    assert record["wall_seconds"] > 0


@pytest.mark.parametrize("method", ["vanilla", "one_image", "class_mean", "nearest_neighbor"])
def test_every_model_free_method_completes(data, store, method):
    run = train(TrainConfig(method=method, **TINY), data, store, progress=False).run
    check_complete(run)
    assert run.params["lam"] == {"vanilla": 0.0, "one_image": 0.5, "class_mean": 0.4, "nearest_neighbor": 0.4}[method]
    cosine = run.history[0]["cosine"]
    assert (cosine == 0.0) if method == "vanilla" else (0.0 < cosine <= 20.0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targets", ["precompute", "on_the_fly"])
def test_rigd_with_tiny_teachers(data, store, teachers, norm, targets):
    check_complete(teachers[norm])
    run = train(TrainConfig(method="rigd", teacher=teachers[norm].name, rigd_targets=targets, **TINY), data, store, progress=False).run
    check_complete(run)
    assert run.params["teacher"] == teachers[norm].name


def test_precomputed_rigd_targets_are_unit_teacher_gradients(data, teachers):
    teacher = load_run_model(teachers["l2"])
    table = PrecomputedGradients.from_teacher(teacher, data.x_train[:6], 10, progress=False).table
    assert table.shape == (6, 10, 3, 32, 32) and table.dtype == torch.float16
    norms = table.float().flatten(2).norm(dim=2)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=2e-3, rtol=0)
    direct = teacher_gradients(teacher, data.x_train[:6].float() / 255, torch.arange(10).expand(6, 10))
    cosine = torch.nn.functional.cosine_similarity(direct.flatten(2), table.float().flatten(2), dim=2)
    assert (cosine > 0.999).all()


def test_rigd_refuses_a_teacher_that_is_not_adversarially_trained(data, store):
    vanilla = train(TrainConfig(method="vanilla", **TINY), data, store, progress=False).run
    with pytest.raises(ConfigError, match="not an adversarially trained run"):
        train(TrainConfig(method="rigd", teacher=vanilla.name, **TINY), data, store, progress=False)


def test_sampled_classes_and_other_strategies_train(data, store):
    for strategy in ("vmap", "replicate"):
        config = TrainConfig(method="class_mean", classes_per_image=2, **TINY)
        result = train(config, data, RunStore(store.root / strategy), progress=False, strategy=strategy)
        assert result.run.complete


def test_a_complete_run_is_reused_unless_retrained(data, store):
    config = TrainConfig(method="vanilla", **TINY)
    first = train(config, data, store, progress=False).run
    sessions = len(first.record["sessions"])
    again = train(config, data, store, progress=False).run
    assert again.path == first.path and len(again.record["sessions"]) == sessions
    retrained = train(config, data, store, progress=False, retrain=True).run
    assert len(retrained.record["sessions"]) == 1 and retrained.complete


def final_state(run):
    return run.load_checkpoint("final")["model"]


def assert_same_results(a, b):
    for key, tensor in final_state(a).items():
        assert torch.equal(tensor, final_state(b)[key]), key
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]
    assert strip(a.history) == strip(b.history)
    drop = lambda m: {k: v for k, v in m.items() if k != "eval_seconds"}
    assert drop(a.metrics) == drop(b.metrics)


def test_time_budget_stops_cleanly_and_resume_matches(data, tmp_path):
    config = TrainConfig(method="nearest_neighbor", **{**TINY, "epochs": 2})
    whole = train(config, data, RunStore(tmp_path / "whole"), progress=False).run
    pieces = RunStore(tmp_path / "pieces")
    sessions = 0
    while True:
        result = train(config, data, pieces, progress=False, max_minutes=1e-6)  # stops after one step
        sessions += 1
        if result.finished:
            break
        assert result.run.status == "interrupted"
    assert sessions == 4  # 2 epochs x 2 steps, one step per session
    assert_same_results(whole, result.run)
    assert len(result.run.record["sessions"]) == 4


def cli(*args):
    return [sys.executable, "-m", "pagcore", *args]


KILL_ARGS = [
    "train", "--dataset", "cifar10", "--method", "nearest_neighbor", "--epochs", "3", "--width", "4",
    "--batch-size", "16", "--pool-size", "8", "--eval-pgd-steps", "1", "--picture-images", "1",
    "--checkpoint-every", "1", "--no-progress", "--device", "cpu",
]


def test_resume_after_kill_mid_epoch_reaches_the_same_result(tmp_path):
    npz = save_npz(synthetic_dataset("cifar10", 96, 20, seed=3), tmp_path / "data.npz")
    args = [*KILL_ARGS, "--data", str(npz)]
    whole = subprocess.run(cli(*args, "--runs", str(tmp_path / "whole")), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    name = json.loads(whole.stdout.strip().splitlines()[-1])["run"]

    killed_root = tmp_path / "killed"
    process = subprocess.Popen(cli(*args, "--runs", str(killed_root)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    assert store.run(name).status == "running" and not store.run(name).complete

    resumed = subprocess.run(cli(*args, "--runs", str(killed_root)), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    run = store.run(name)
    assert run.complete
    assert run.record["sessions"][0]["epochs"][0] == 1  # the second session began inside epoch 2
    assert_same_results(RunStore(tmp_path / "whole").run(name), run)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "imagenet", "--synthetic", "4", "4"], "dataset must be one of 'cifar10', 'stl10'"),
        (["--method", "nn", "--synthetic", "4", "4"], "method must be one of"),
        (["--lam", "-0.5", "--synthetic", "4", "4"], "lam must be a finite number >= 0"),
        (["--data", "/no/such/cifar.npz"], "cifar10 was not found at '/no/such/cifar.npz'"),
        (["--method", "rigd", "--synthetic", "4", "4"], "teacher must name"),
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


def test_config_checks():
    with pytest.raises(ConfigError, match="lam must be 0 for method 'vanilla'"):
        TrainConfig(method="vanilla", lam=0.4).resolved().validate()
    with pytest.raises(ConfigError, match="classes_per_image"):
        TrainConfig(classes_per_image=11).resolved().validate()
    with pytest.raises(ConfigError, match="lr_milestones"):
        TrainConfig(lr_milestones=[0.5], lr_factors=[]).resolved().validate()
    stl = TrainConfig(dataset="stl10", method="one_image").resolved()
    assert stl.lam == 0.25 and stl.batch_size == 32 and stl.picture_eps == 30.0
    assert TrainConfig(dataset="stl10", method="adversarial", adv_norm="l2").resolved().adv_eps == 1.5


def test_lr_schedule_defaults_to_the_authors_step_schedule():
    config = TrainConfig(epochs=100)
    assert [config.lr_at(e) for e in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4])


def test_training_step_changes_the_weights(data):
    from pagcore.models import build_model
    from pagcore.targets import build_target_source
    from pagcore.training import StepSettings

    model = build_model("cifar10", width=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    source = build_target_source("class_mean", data.x_train, data.y_train, 10, center=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    index = torch.arange(8)
    loss = training_step(model, optimizer, data.x_train[index], data.y_train[index], index, source,
                         StepSettings(num_classes=10, lam=0.4), torch.Generator().manual_seed(0))
    assert loss.total.requires_grad is False and torch.isfinite(loss.total)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_a_smoke_run_is_never_resumed_as_a_real_one(tmp_path):
    """Same configuration, synthetic data then "real" (npz) data: two separate runs."""
    store = RunStore(tmp_path / "runs")
    config = TrainConfig(method="vanilla", **{**TINY, "width": 64, "epochs": 1})
    synthetic = synthetic_dataset("cifar10", 64, 20)
    smoke = train(config, synthetic, store, progress=False, max_minutes=1e-6).run
    assert smoke.kind == "smoke" and smoke.status == "interrupted"
    from pagcore.data import load_dataset

    as_real = load_dataset("cifar10", save_npz(synthetic, tmp_path / "d.npz"))  # read like real data
    real = train(config, as_real, store, progress=False, max_minutes=1e-6).run
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
    args = ["train", "--method", "class_mean", "--synthetic", "32", "8", "--epochs", "1", "--width", "4",
            "--batch-size", "16", "--eval-pgd-steps", "1", "--picture-images", "1", "--no-progress", "--runs", str(tmp_path)]
    out = subprocess.run([sys.executable, "-c", blocker, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["status"] == "complete"
