"""The class-conditional denoiser, its score-based targets, the reference denoisers and its training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pagcore.base.deadline import Deadline
from pagcore.base.validation import ConfigError
from pagcore.config import ExecutionConfig, TrainConfig
from pagcore.data import synthetic_dataset
from pagcore.evaluate.denoiser_quality import implicit_classifier_accuracy
from pagcore.evaluate.final import EvaluationConfig
from pagcore.paper.denoiser import Denoiser, DenoiserShape, denoising_loss, log_posterior_gradients
from pagcore.paper.reference_denoisers import EmpiricalDenoiser, GaussianDenoiser
from pagcore.store.runs import RunStore
from pagcore.train import score_targets as score_targets_module
from pagcore.train import trainer as trainer_module
from pagcore.train.denoiser import DenoiserConfig, denoiser_store, load_denoiser, train_denoiser
from pagcore.train.score_targets import score_table, score_targets
from pagcore.train.trainer import train

TINY = DenoiserShape(width=8, multipliers=(1, 2), blocks=1)


def labelled_denoiser(num_classes: int = 10) -> Denoiser:
    """A tiny untrained denoiser whose output depends on the label (a fresh one does not: each of
    its residual blocks starts as the identity)."""
    torch.manual_seed(0)
    denoiser = Denoiser(3, num_classes, TINY).eval()
    with torch.no_grad():
        for parameter in denoiser.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return denoiser


@pytest.mark.parametrize("shape", [TINY, DenoiserShape(width=8, multipliers=(1, 1, 2), blocks=2)])
def test_the_denoiser_maps_images_to_images_for_every_label_and_the_null_label(shape):
    torch.manual_seed(0)
    denoiser = Denoiser(3, 10, shape)
    x = torch.rand(4, 3, 16, 16)
    labels = torch.tensor([0, 9, denoiser.null_class, 3])
    assert denoiser(x, torch.full((4,), 0.3), labels).shape == x.shape
    assert denoiser(x, torch.tensor(0.3), labels).shape == x.shape  # one σ for the whole batch


def test_the_preconditioning_returns_the_input_as_the_noise_vanishes_and_the_centre_as_it_grows():
    torch.manual_seed(0)
    denoiser = Denoiser(3, 10, TINY)
    x = torch.rand(2, 3, 8, 8)
    labels = torch.tensor([1, 2])
    assert torch.allclose(denoiser(x, torch.tensor(1e-5), labels), x, atol=1e-4)
    # At very large σ the skip weight vanishes and the output stays bounded near the data's centre.
    far = denoiser(x + 1e4 * torch.randn_like(x), torch.tensor(1e4), labels)
    assert far.abs().max() < 10


def test_score_based_targets_are_the_difference_of_conditional_and_unconditional_denoisers_over_sigma_squared():
    denoiser = labelled_denoiser(5)
    x, sigma = torch.rand(3, 3, 8, 8), 0.2
    classes = torch.tensor([[0, 4], [1, 1], [3, 2]])
    targets = log_posterior_gradients(denoiser, x, sigma, classes)
    assert targets.shape == (3, 2, 3, 8, 8)
    s = torch.full((3,), sigma)
    unconditional = denoiser(x, s, torch.full((3,), denoiser.null_class))
    for j in range(2):
        expected = (denoiser(x, s, classes[:, j]) - unconditional) / sigma**2
        torch.testing.assert_close(targets[:, j], expected, rtol=1e-4, atol=1e-4)


def test_the_empirical_denoiser_interpolates_from_the_nearest_image_to_the_mean_and_chunks_do_not_matter():
    torch.manual_seed(0)
    images, labels = torch.rand(40, 1, 2, 3), torch.arange(40) % 4
    exact = EmpiricalDenoiser(images, labels, 4, chunk_size=1000)
    chunked = EmpiricalDenoiser(images, labels, 4, chunk_size=7)
    query = images[:5] + 1e-3 * torch.randn(5, 1, 2, 3)
    torch.testing.assert_close(exact(query, 1e-3), images[:5], atol=1e-3, rtol=0)  # the nearest training image
    torch.testing.assert_close(exact(query, 1e4), images.mean(0).expand(5, -1, -1, -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(chunked(query, 0.3), exact(query, 0.3))
    of_class = exact(query, 1e4, label=2)
    torch.testing.assert_close(of_class[0], images[labels == 2].mean(0), atol=1e-4, rtol=0)
    # The direct softmax over all images, at a moderate σ.
    distances = (query.flatten(1)[:, None] - images.flatten(1)[None]).square().sum(-1)
    weights = torch.softmax(-distances / (2 * 0.3**2), dim=1)
    torch.testing.assert_close(exact(query, 0.3).flatten(1), weights @ images.flatten(1), atol=1e-5, rtol=1e-5)


def test_the_gaussian_denoiser_is_tweedies_optimum_for_gaussian_data():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0], [0.8, 0.3]])
    samples = (torch.randn(20_000, 2) @ mixing.T + torch.tensor([0.5, 0.2])).double()
    labels = torch.zeros(20_000, dtype=torch.long)
    denoiser = GaussianDenoiser(samples.reshape(-1, 1, 1, 2).float(), labels, 1)
    mean, covariance = samples.mean(0), torch.cov(samples.T)
    x, sigma = torch.tensor([[1.0, -0.5], [0.0, 0.3]], dtype=torch.float64), 0.4
    estimate = denoiser(x.reshape(-1, 1, 1, 2).float(), sigma).reshape(-1, 2).double()
    # Tweedie: (D(x) - x) / σ² is the score of the noised Gaussian N(μ, Σ + σ² I).
    score = -(x - mean) @ torch.linalg.inv(covariance + sigma**2 * torch.eye(2))
    torch.testing.assert_close((estimate - x) / sigma**2, score, atol=1e-4, rtol=1e-4)


def test_the_gaussian_denoiser_of_fewer_images_than_pixels_is_the_covariance_formula():
    # STL-10 has 5,000 training images of 27,648 values: the covariance is singular and never formed.
    torch.manual_seed(1)
    images = torch.rand(6, 3, 2, 2)
    flat = images.flatten(1).double()
    mean, covariance = flat.mean(0), torch.cov(flat.T)
    noisy, sigma = torch.rand(3, 3, 2, 2), 0.3
    expected = (
        mean
        + (noisy.flatten(1).double() - mean) @ torch.linalg.solve(covariance + sigma**2 * torch.eye(12), covariance).T
    )
    estimate = GaussianDenoiser(images, torch.zeros(6, dtype=torch.long), 1)(noisy, sigma)
    torch.testing.assert_close(estimate.flatten(1).double(), expected, atol=1e-5, rtol=1e-5)


def test_a_few_steps_of_the_denoising_loss_teach_a_tiny_denoiser_something():
    torch.manual_seed(0)
    denoiser = Denoiser(3, 2, TINY)
    images = torch.rand(16, 3, 8, 8).round()  # two-level images: easy to denoise
    labels = torch.arange(16) % 2
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    sigma = torch.full((16,), 0.5)
    noise = torch.randn(images.shape, generator=generator)
    first = denoising_loss(denoiser, images, sigma, labels, noise).item()
    for _ in range(60):
        optimizer.zero_grad()
        denoising_loss(denoiser, images, sigma, labels, torch.randn(images.shape, generator=generator)).backward()
        optimizer.step()
    assert denoising_loss(denoiser, images, sigma, labels, noise).item() < 0.7 * first


def test_denoiser_settings_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="sigma_max"):
        DenoiserConfig(sigma_min=0.5, sigma_max=0.1).validate()
    with pytest.raises(ConfigError, match="label_drop"):
        DenoiserConfig(label_drop=0.0).validate()
    with pytest.raises(ConfigError, match="multipliers"):
        DenoiserConfig(multipliers=[]).validate()


def test_a_stopped_denoiser_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    data = synthetic_dataset("cifar10", 64, 8)
    config = DenoiserConfig(width=8, multipliers=[1, 2], epochs=2, batch_size=16)
    whole, finished = train_denoiser(config, data, denoiser_store(tmp_path / "a"), progress=False, kind="smoke")
    assert finished and whole.record["status"] == "trained" and len(whole.history) == 2
    store = denoiser_store(tmp_path / "b")

    class PassesAfter(Deadline):
        """A deadline that passes at its ``calls``-th question: mid-epoch, whatever the machine's speed."""

        def __init__(self, calls):
            super().__init__(0.0)
            self.calls = calls

        def passed(self):
            self.calls -= 1
            return self.calls < 0

    _, finished = train_denoiser(config, data, store, deadline=PassesAfter(9), progress=False, kind="smoke")
    assert not finished
    part = store.run(config.run_name("smoke"))
    assert part.load_checkpoint()["step"] not in (0, 4) and len(part.history) == 1  # stopped inside epoch 2
    assert part.record["status"] == "interrupted" and part.checkpoint_path("latest").exists()
    resumed, finished = train_denoiser(config, data, store, progress=False, kind="smoke")
    assert finished and len(resumed.record["sessions"]) == 2
    a, b = load_denoiser(whole), load_denoiser(resumed)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(p, q)
    assert whole.name.startswith("smoke-cifar10-denoiser-w8-e2-s0-")


class TemplateDenoiser(torch.nn.Module):
    """A stand-in denoiser that answers every noisy image with its label's template image."""

    def __init__(self, templates):
        super().__init__()
        self.templates, self.num_classes, self.null_class = templates, len(templates), len(templates)

    def forward(self, noisy, sigma, labels):
        mean = self.templates.mean(0, keepdim=True)
        return torch.where((labels == self.null_class)[:, None, None, None], mean, self.templates[labels.clamp_max(2)])


def test_the_implicit_classifier_picks_the_label_whose_denoiser_explains_the_image():
    templates = torch.stack([torch.full((3, 4, 4), v) for v in (0.1, 0.5, 0.9)])
    labels = torch.tensor([2, 0, 1, 1, 0])
    result = implicit_classifier_accuracy(TemplateDenoiser(templates), templates[labels], labels, sigmas=(0.1, 0.3))
    assert result["accuracy"] == 1.0 and result["predictions"] == labels.tolist()
    wrong = torch.tensor([0, 1, 2, 0, 1])
    assert implicit_classifier_accuracy(TemplateDenoiser(templates), templates[labels], wrong)["accuracy"] == 0.0


def test_the_implicit_classifier_does_not_depend_on_how_many_images_go_through_at_once():
    denoiser = labelled_denoiser()
    data = synthetic_dataset("cifar10", 4, 7)
    one, every = (
        implicit_classifier_accuracy(denoiser, data.x_test, data.y_test, sigmas=(0.1, 0.3), batch_size=size)
        for size in (1, 100)
    )
    assert one == every


def test_score_tables_are_unit_targets_independent_of_chunking_and_resume_from_their_cache(tmp_path, monkeypatch):
    denoiser = labelled_denoiser()
    images = synthetic_dataset("cifar10", 20, 4).x_train
    whole = score_table(denoiser, images, 0.2, progress=False)
    assert whole.shape == (20, 10, 3, 32, 32) and whole.dtype == torch.float16
    norms = whole.float().flatten(2).norm(dim=2)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=2e-3, rtol=0)
    direct = score_targets(denoiser, images, range(3, 5), 0.2)  # any rows, alone: the same targets
    torch.testing.assert_close(direct.half(), whole[3:5], atol=1e-3, rtol=0)
    monkeypatch.setattr(score_targets_module, "CHUNK_IMAGES", 8)
    cache = tmp_path / "table.npy"
    torch.testing.assert_close(score_table(denoiser, images, 0.2, cache=cache, progress=False), whole)
    # A computation stopped after its first chunk: the second and third are not marked done.
    marks = np.load(cache.with_suffix(".done.npy"))
    marks[1:] = False
    np.save(cache.with_suffix(".done.npy"), marks)
    table = np.load(cache, mmap_mode="r+")
    table[8:] = 0
    table[:8] = 7  # a sentinel in the chunk marked done: a resumed computation must not redo it
    table.flush()
    resumed = score_table(denoiser, images, 0.2, cache=cache, progress=False)
    assert (resumed[:8] == 7).all()
    torch.testing.assert_close(resumed[8:], whole[8:])
    assert not torch.equal(score_table(denoiser, images, 0.2, draws=2, progress=False), whole)


def test_a_pag_run_trains_on_score_based_targets_of_a_stored_denoiser(tmp_path):
    data = synthetic_dataset("cifar10", 64, 20, seed=0)
    runs = RunStore(tmp_path)
    denoiser, _ = train_denoiser(
        DenoiserConfig(width=8, multipliers=[1, 2], epochs=1, batch_size=32),
        data,
        denoiser_store(tmp_path),
        progress=False,
        kind="smoke",
    )
    knobs = dict(dataset="cifar10", epochs=1, width=4, batch_size=32, objective="pag", source="score")
    with pytest.raises(ConfigError, match="denoiser must name"):
        TrainConfig.from_flat(knobs).resolve()
    config = TrainConfig.from_flat({**knobs, "denoiser": denoiser.name, "score_sigma": 0.3})
    assert config.resolve().objective.lam == 1.5  # the authors' lambda for score-based targets on CIFAR-10
    run = train(
        config, data, runs, ExecutionConfig(progress=False), EvaluationConfig(pgd_steps=1, picture_images=2)
    ).run
    assert run.complete and run.params["denoiser"] == denoiser.name and run.params["score_sigma"] == 0.3
    assert "-score-sigma0.3-lam1.5-" in run.name
    # The same targets as the PAG term of adversarial training (the later version's boost).
    boosted = {**knobs, "objective": "adversarial", "threat": "linf", "steps": 1, "lam": 1.5, "denoiser": denoiser.name}
    run = train(
        TrainConfig.from_flat(boosted), data, runs, ExecutionConfig(progress=False), EvaluationConfig(pgd_steps=1)
    ).run
    assert run.complete and run.params["source"] == "score" and run.params["adversary"]["threat"] == "linf"
    assert "-adversarial-linf-score-" in run.name and run.history[-1]["cosine"] > 0  # the term was there
    with pytest.raises(ConfigError, match="no lambda is published"):
        TrainConfig.from_flat({**knobs, "dataset": "stl10", "denoiser": denoiser.name}).resolve()


def test_a_score_run_checks_its_denoiser_before_any_work_and_keeps_its_table_in_the_cache(tmp_path, monkeypatch):
    data = synthetic_dataset("cifar10", 64, 20, seed=0)
    runs = RunStore(tmp_path)
    config = DenoiserConfig(width=8, multipliers=[1, 2], epochs=1, batch_size=32, sigma_min=0.1, sigma_max=0.5)
    denoiser, _ = train_denoiser(config, data, denoiser_store(tmp_path), progress=False, kind="smoke")
    knobs = dict(dataset="cifar10", epochs=1, width=4, batch_size=32, objective="pag", source="score")
    knobs["denoiser"] = denoiser.name
    evaluation = EvaluationConfig(pgd_steps=1, picture_images=2)

    def train_with(options, **changes):
        return train(TrainConfig.from_flat({**knobs, **changes}), data, runs, options, evaluation)

    with pytest.raises(ConfigError, match="outside the noise levels"):
        train_with(ExecutionConfig(progress=False), score_sigma=0.9)
    with pytest.raises(ConfigError, match="a real run needs a real denoiser"):
        train_with(ExecutionConfig(progress=False, kind="real"))
    assert not [path for path in tmp_path.iterdir() if path.name != "denoisers"]  # no run was begun
    monkeypatch.setattr(trainer_module, "SCORE_TARGETS_DIR", tmp_path / "cache")
    data = replace(data, source="npz: a file")  # real data keeps its table in the cache
    run = train_with(
        ExecutionConfig(progress=False, kind="smoke"), denoiser=str(tmp_path / "denoisers" / denoiser.name)
    ).run
    assert run.complete and run.params["denoiser"] == denoiser.name  # a path or a name: the same run
    (table,) = [p for p in (tmp_path / "cache").glob("*.npy") if not p.name.endswith(".done.npy")]
    assert table.name.startswith(f"{denoiser.name}-sigma0.2-draws1-cifar10-")
