"""The toy experiment of Section 5.1: data, configuration checks, a short run, the CLI."""

import json
import statistics
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from pagcore.base.validation import ConfigError
from pagcore.toy import experiment
from pagcore.toy.experiment import manifold_alignment, run_toy_experiment
from pagcore.toy.problem import MODE_CENTERS, ToyConfig, ToyMLP, make_toy_data, seeded_model, toy_split
from pagcore.toy.training import ToyMember, train_toy_model, train_toy_models


class TestToyData:
    def setup_method(self):
        self.x, self.y = make_toy_data(1000, torch.Generator().manual_seed(0))

    def test_sizes(self):
        assert self.x.shape == (6000, 2) and self.x.dtype == torch.float32
        assert torch.bincount(self.y).tolist() == [3000, 3000]

    def test_points_lie_on_the_line(self):
        assert torch.equal(self.x[:, 1], 2 * self.x[:, 0])

    def test_modes(self):
        # Samples come mode by mode; each mode is N(c, 1) in x1.
        for m, (label, center) in enumerate((label, c) for label, cs in MODE_CENTERS.items() for c in cs):
            block = self.x[m * 1000 : (m + 1) * 1000, 0]
            assert (self.y[m * 1000 : (m + 1) * 1000] == label).all()
            assert abs(block.mean().item() - center) < 0.15  # 5 standard errors
            assert abs(block.std().item() - 1.0) < 0.1

    def test_classes_alternate_along_the_line(self):
        centers = sorted((c, label) for label, cs in MODE_CENTERS.items() for c in cs)
        labels = [label for _, label in centers]
        assert labels == [0, 1, 0, 1, 0, 1]
        gaps = [b[0] - a[0] for a, b in zip(centers, centers[1:])]
        assert gaps == [20.0] * 5

    def test_seeded(self):
        again, _ = make_toy_data(1000, torch.Generator().manual_seed(0))
        other, _ = make_toy_data(1000, torch.Generator().manual_seed(1))
        assert torch.equal(self.x, again) and not torch.equal(self.x, other)


@pytest.mark.parametrize(
    "change,parameter,allowed",
    [
        (dict(source="nn"), "source", "'one_image', 'class_mean', 'nearest_neighbor'"),
        (dict(gradient="softmax"), "gradient", "'logit', 'log_softmax'"),
        (dict(threat="l1"), "threat", "'linf', 'l2'"),
        (dict(lam=-0.5), "lam", ">= 0"),
        (dict(attack_eps=-1.0), "attack_eps", ">= 0"),
        (dict(attack_steps=0), "attack_steps", ">= 1"),
        (dict(seeds=[]), "seeds", "at least one"),
        (dict(epochs=0), "epochs", ">= 1"),
    ],
)
def test_bad_parameters_fail_before_any_training(monkeypatch, change, parameter, allowed):
    def no_training(*args, **kwargs):
        raise AssertionError("training started despite a bad parameter")

    monkeypatch.setattr(experiment, "train_toy_models", no_training)
    with pytest.raises(ConfigError) as error:
        run_toy_experiment(replace(ToyConfig(), **change), progress=False)
    assert str(error.value).startswith(parameter)
    assert allowed in str(error.value)


def test_same_seed_same_initial_weights_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a, b, c = seeded_model(3), seeded_model(3), seeded_model(4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, c[0].weight)


SMALL = dict(epochs=3, train_per_mode=60, test_per_mode=20, pool_size=10)


def test_short_run_reports_both_models_per_seed():
    result = run_toy_experiment(ToyConfig(seeds=[0, 1], **SMALL), progress=False)
    summary = result.summary()
    assert set(summary) == {"vanilla", "pag", "seeds", "seconds"}
    assert summary["seeds"] == [0, 1]
    for model in ("vanilla", "pag"):
        for metric in ("clean", "pgd"):
            values = [r.metrics[model][metric] for r in result.per_seed]
            # Fractions of the 6 x 20 test points: counts, not just numbers in [0, 1].
            assert all(abs(v * 120 - round(v * 120)) < 1e-9 and 0 <= round(v * 120) <= 120 for v in values)
            assert summary[model][metric] == pytest.approx(sum(values) / 2)
    # An attack can only hurt on points it starts from: robust <= clean, model by model.
    for r in result.per_seed:
        for model in ("vanilla", "pag"):
            assert r.metrics[model]["pgd"] <= r.metrics[model]["clean"]
            assert -1 <= r.metrics[model]["alignment"] <= 1
    for model in ("vanilla", "pag"):
        scores = [r.metrics[model]["alignment"] for r in result.per_seed]
        assert summary[model]["alignment"] == pytest.approx(statistics.fmean(scores))


def line_model(weights) -> ToyMLP:
    """A ToyMLP computing logits f(x) = (0, w . x): its hidden layer passes x through ReLU(+x), ReLU(-x)."""
    model = ToyMLP(hidden=4)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]))
        model[0].bias.zero_()
        w = torch.tensor(weights, dtype=torch.float32)
        model[2].weight.copy_(torch.stack([torch.zeros(4), torch.cat([w, -w])]))
        model[2].bias.zero_()
    return model.eval()


def test_manifold_alignment_is_one_along_the_line_and_zero_across_it():
    # Class 0 at x1 = 0, class 1 at x1 = +10: from class 0 the way to class 1 is +(1, 2).
    x_train = torch.tensor([[0.0, 0.0], [10.0, 20.0]])
    y_train = torch.tensor([0, 1])
    x, y = torch.tensor([[0.5, 1.0], [-0.5, -1.0]]), torch.tensor([0, 0])
    along = manifold_alignment(line_model([1.0, 2.0]), x, y, x_train, y_train)
    backwards = manifold_alignment(line_model([-1.0, -2.0]), x, y, x_train, y_train)
    across = manifold_alignment(line_model([2.0, -1.0]), x, y, x_train, y_train)
    assert along == pytest.approx(1.0, abs=1e-6)
    assert backwards == pytest.approx(-1.0, abs=1e-6)
    assert across == pytest.approx(0.0, abs=1e-6)
    # From class 1 the way back to class 0 is -(1, 2); its gradient is that of log p(0 | x).
    assert manifold_alignment(line_model([1.0, 2.0]), x_train[1:], y_train[1:], x_train, y_train) == pytest.approx(1.0)


def test_runs_are_reproducible():
    a = run_toy_experiment(ToyConfig(seeds=[5], **SMALL), progress=False).summary()
    b = run_toy_experiment(ToyConfig(seeds=[5], **SMALL), progress=False).summary()
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_a_random_start_attack_repeats_with_the_same_generator():
    # Points on a linear model's boundary, one tiny step from a start in a wide ball: which side
    # each lands on, and so the accuracy, is decided by the starts drawn.
    config = ToyConfig(attack_random_start=True, attack_eps=1.0, attack_steps=1, attack_step_size=1e-3)
    model = line_model([1.0, 2.0])
    x = torch.linspace(-1, 1, 40).unsqueeze(1) * torch.tensor([[2.0, -1.0]])  # w . x = 0
    y = torch.arange(40) % 2

    def pgd_accuracy(generator_seed: int, global_seed: int) -> float:
        torch.manual_seed(global_seed)  # whatever ran before must not matter
        generator = torch.Generator().manual_seed(generator_seed)
        return experiment.evaluate_toy_model(model, x, y, config.attack(), generator=generator)["pgd"]

    assert pgd_accuracy(3, global_seed=0) == pgd_accuracy(3, global_seed=1)
    assert len({pgd_accuracy(s, global_seed=0) for s in range(6)}) > 1, "the starts should move the accuracy"


def test_pag_and_vanilla_models_differ_only_through_lambda():
    result = run_toy_experiment(ToyConfig(seeds=[0], **dict(SMALL, lam=0.0)), progress=False)
    models = result.per_seed[0].models
    for p, q in zip(models["vanilla"].parameters(), models["pag"].parameters()):
        assert torch.equal(p, q)


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pagcore", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_prints_json_summary_on_its_last_line(tmp_path):
    record = tmp_path / "record.json"
    out = run_cli("toy", "--seeds", "0", "--epochs", "2", "--pool-size", "10", "--record", str(record), "--no-progress")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["seeds"] == [0] and summary["seconds"] > 0
    saved = json.loads(record.read_text())
    assert saved["summary"]["pag"]["pgd"] == summary["pag"]["pgd"] and saved["kind"] == "smoke"  # 2 epochs: smoke
    for key in ("git", "device", "torch", "started", "wall_seconds", "parameters"):
        assert key in saved
    assert saved["parameters"]["epochs"] == 2
    assert saved["summary"]["pag"] == summary["pag"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--source", "mean"], "argument --source: invalid choice: 'mean'"),
        (["--gradient", "prob"], "argument --gradient: invalid choice: 'prob'"),
        (["--threat", "l0"], "argument --threat: invalid choice: 'l0'"),
        (["--epochs", "0"], "epochs must be an integer >= 1"),
        (["--lam", "-1"], "lam must be"),
        (["--attack-eps", "-2"], "attack_eps must be"),
        (["--attack-steps", "0"], "attack_steps must be"),
        (["--seeds"], "--seeds: expected at least one argument"),
    ],
)
def test_cli_rejects_bad_input_with_one_clear_error(args, message):
    out = run_cli("toy", *args, timeout=60)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert "epoch/s" not in out.stderr  # no progress bar: no training started


@pytest.mark.parametrize(
    "change",
    [dict(), dict(classes_per_image=1), dict(gradient="log_softmax")],
    ids=["all classes", "k=1", "log_softmax"],
)
def test_batched_training_equals_one_model_at_a_time(change):
    """Every member of a stacked training ends where its own training alone ends: same seeds,
    sources and lambdas, vanilla included. (Bit-equal here; the tolerance allows for a BLAS that
    orders a grouped product's sums differently.)"""
    config = ToyConfig(**dict(SMALL, epochs=4, **change))
    members = [
        ToyMember(0, 0.0, "nearest_neighbor"),
        ToyMember(0, 1.0, "nearest_neighbor"),
        ToyMember(1, 0.4, "class_mean"),
        ToyMember(2, 1.0, "one_image"),
    ]
    batched = train_toy_models(members, config, progress=False)
    for member, model in zip(members, batched):
        (x, y), _ = toy_split(config, member.seed)
        alone = train_toy_model(
            x, y, replace(config, source=member.source), member.seed, lam=member.lam, progress=False
        )
        for p, q in zip(alone.parameters(), model.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
    # The members did not all end alike: the comparison above is not between copies of one model.
    assert not torch.allclose(batched[0][0].weight, batched[1][0].weight)


def test_a_shortened_toy_run_is_recorded_as_smoke():
    """Only the paper's training length and data sizes make a real toy record."""
    from pagcore.toy.experiment import toy_kind

    assert toy_kind(ToyConfig()) == "real" and toy_kind(ToyConfig(seeds=[0, 1], lam=0.5)) == "real"
    assert toy_kind(ToyConfig(epochs=2)) == "smoke" and toy_kind(ToyConfig(train_per_mode=30)) == "smoke"
    result = run_toy_experiment(ToyConfig(seeds=[0], **SMALL), progress=False)
    assert experiment.toy_record(result)["kind"] == "smoke"


def test_lambda_grid_models_are_the_experiments_models():
    """lambda = 0 and lambda = config.lam of a grid are the vanilla and PAG models of the same
    seed's experiment, so the slider's numbers agree with the chapter's."""
    config = ToyConfig(seeds=[1], **dict(SMALL, lam=0.5))
    grid = experiment.lambda_grid(config, [0.0, 0.1, 0.5], seed=1)
    per_seed = run_toy_experiment(config, progress=False).per_seed[0]
    # Equal up to the float rounding of a batched training of another size.
    assert grid.metrics[0] == pytest.approx(per_seed.metrics["vanilla"], abs=1e-5)
    assert grid.metrics[2] == pytest.approx(per_seed.metrics["pag"], abs=1e-5)
    assert grid.metrics[0] != pytest.approx(grid.metrics[2], abs=1e-5)  # lambda changed something
    assert len(grid.models) == len(grid.metrics) == 3
    record = grid.record()
    assert {k: record[k] for k in ("seed", "lams", "source", "gradient")} == {
        "seed": 1,
        "lams": [0.0, 0.1, 0.5],
        "source": "nearest_neighbor",
        "gradient": "logit",
    }
    assert record["results"]["pgd"] == [m["pgd"] for m in grid.metrics]
    assert set(record["results"]) == set(experiment.TOY_METRICS)


def test_the_lambda_grid_is_in_the_toy_record():
    config = ToyConfig(seeds=[0], **SMALL)
    main = run_toy_experiment(config, progress=False)
    grid = experiment.lambda_grid(config, [0.0, 1.0])
    without, record = experiment.toy_record(main), experiment.toy_record(main, grid=grid)
    assert "lambda_slider" not in without
    assert record["lambda_slider"] == json.loads(json.dumps(grid.record()))  # saved as JSON as it is
    assert record["wall_seconds"] == pytest.approx(without["wall_seconds"] + grid.seconds, abs=2e-3)


@pytest.mark.parametrize("lams", [[], [1.0], [0.0, 0.0], [1.0, 0.5], [0.0, -1.0], "0 1"])
def test_bad_lambda_grids_fail_before_any_training(monkeypatch, lams):
    monkeypatch.setattr(experiment, "train_toy_models", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ConfigError, match="lambda"):
        experiment.lambda_grid(ToyConfig(**SMALL), lams)
