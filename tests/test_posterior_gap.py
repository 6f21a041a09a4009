"""The posterior gap: the distance from the origin to the hull of a target family's directions, the
cap it puts on how well log-posterior gradients can align with the family, and its recorded
measurement."""

import json
import math

import pytest
import torch

from pagcore.cli import main
from pagcore.evaluate.posterior_gap import cosine_cap, hull_distance, load_posterior_gap, posterior_gaps
from pagcore.paper.reference_denoisers import EmpiricalDenoiser


def log_softmax_gradients(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """∇ log p(c | x) for every class of a linear classifier: ``(C, D)``."""
    x = x.clone().requires_grad_(True)
    log_p = torch.log_softmax(weights @ x, dim=0)
    return torch.stack([torch.autograd.grad(log_p[c], x, retain_graph=True)[0] for c in range(len(weights))])


def test_the_hull_distance_of_known_families():
    assert hull_distance(torch.eye(10)) == pytest.approx(1 / math.sqrt(10), abs=1e-6)
    v = torch.nn.functional.normalize(torch.randn(7, dtype=torch.double), dim=0)
    assert hull_distance(torch.stack([v, v, v])) == pytest.approx(1.0, abs=1e-6)
    assert hull_distance(torch.stack([v, -v])) == pytest.approx(0.0, abs=1e-6)
    # The origin as a strict mixture of three directions in a plane, and off that mixture.
    plane = torch.tensor([[1.0, 0.0], [-0.5, 3**0.5 / 2], [-0.5, -(3**0.5) / 2]], dtype=torch.double)
    assert hull_distance(plane) == pytest.approx(0.0, abs=1e-6)
    assert hull_distance(plane[:2]) == pytest.approx(0.5, abs=1e-6)  # the midpoint of the chord


def test_log_posterior_gradients_have_no_gap_and_logit_gradients_do():
    torch.manual_seed(0)
    weights, x = torch.randn(10, 48, dtype=torch.double), torch.randn(48, dtype=torch.double)
    gaps = posterior_gaps(torch.stack([log_softmax_gradients(weights, x), weights]))
    assert gaps[0] == pytest.approx(0.0, abs=1e-6)
    assert gaps[1] > 0.2


def test_the_cap_bounds_the_weighted_cosine_of_any_log_posterior_family():
    torch.manual_seed(1)
    for _ in range(20):
        weights, x = torch.randn(10, 24, dtype=torch.double), torch.randn(24, dtype=torch.double)
        gradients = log_softmax_gradients(weights, x)
        p = torch.softmax(weights @ x, dim=0)
        share = p * gradients.norm(dim=1)
        share /= share.sum()
        # Targets sharing a large common direction, as class-mean directions r_c - x do.
        targets = torch.randn(10, 24, dtype=torch.double) + 3 * torch.randn(24, dtype=torch.double)
        cosines = torch.nn.functional.cosine_similarity(gradients, targets, dim=1)
        gap = float(posterior_gaps(targets[None])[0])
        assert gap > 0.3
        assert float(share @ cosines) <= cosine_cap(gap) + 1e-9
        assert float(cosines.min()) <= cosine_cap(gap) + 1e-9
    assert cosine_cap(0.0) == 1.0 and cosine_cap(1.0) == 0.0


def test_the_exact_denoisers_targets_are_log_posterior_gradients():
    """The empirical denoiser's unconditional estimate is exactly the posterior mixture of its class
    estimates, so its score-based targets have no gap; the class means' directions do."""
    torch.manual_seed(2)
    images, labels = torch.rand(60, 3, 4, 4), torch.arange(60) % 3
    denoiser = EmpiricalDenoiser(images, labels, 3)
    sigma, x = 0.3, torch.rand(5, 3, 4, 4)
    unconditional = denoiser(x, sigma)
    targets = torch.stack([(denoiser(x, sigma, c) - unconditional) / sigma**2 for c in range(3)], dim=1)
    assert posterior_gaps(targets).max() < 1e-3
    means = torch.stack([images[labels == c].mean(0) for c in range(3)])
    assert posterior_gaps(means[None] - x[:, None]).min() > 0.1


def test_the_command_records_every_model_free_source(tmp_path, capsys):
    out = tmp_path / "measurements"
    argv = ["posterior-gap", "--synthetic", "120", "20", "--images", "12", "--no-denoiser"]
    assert main([*argv, "--measurements", str(out), "--runs", str(tmp_path / "runs")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["kind"] == "smoke" and set(result["gaps"]) == {"one_image", "class_mean", "nearest_neighbor"}
    record = load_posterior_gap("cifar10", out)
    assert record["parameters"]["images"] == 12 and "git" in record and "wall_seconds" in record
    for gaps in record["gaps"].values():
        assert 0 <= gaps["q10"] <= gaps["q50"] <= gaps["q90"] <= 1
        assert gaps["median_cosine_cap"] == pytest.approx(cosine_cap(gaps["q50"]))


def test_the_command_refuses_bad_settings_before_reading_data(tmp_path):
    with pytest.raises(SystemExit):
        main(["posterior-gap", "--data", str(tmp_path / "missing.npz"), "--images", "0"])
