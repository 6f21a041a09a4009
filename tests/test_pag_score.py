"""The PAG score: 1 against oneself, about 0 against an unrelated model; targeted pictures judged by a reference."""

import pytest
import torch
from tiny_models import image_model, trained_image_model
from torch import nn

from pagcore.evaluate.pag_score import (
    gradient_alignment,
    log_probability_gradients,
    score_alignment,
    targeted_confidence,
)


def test_a_model_is_perfectly_aligned_with_itself():
    model, x, _ = trained_image_model()
    result = gradient_alignment(model, model, x[:16], num_classes=4)
    assert result["score"] == pytest.approx(1.0, abs=1e-5)
    assert len(result["per_class"]) == 4 and result["images"] == 16


def test_unrelated_random_models_score_near_zero():
    x = torch.rand(32, 3, 6, 6)
    reference = image_model(seed=1)
    scores = [gradient_alignment(reference, image_model(seed=s), x, num_classes=4)["score"] for s in (2, 3, 4)]
    assert all(abs(s) < 0.25 for s in scores), scores
    trained = trained_image_model()[0]
    assert gradient_alignment(trained, trained, x, num_classes=4)["score"] > 0.99 > max(scores)


def test_score_is_symmetric_and_batching_does_not_matter():
    model, x, _ = trained_image_model()
    other = trained_image_model(seed=1)[0]
    one = gradient_alignment(model, other, x, num_classes=4, batch_size=64)["score"]
    assert gradient_alignment(other, model, x, num_classes=4, batch_size=7)["score"] == pytest.approx(one, abs=1e-6)


def test_gradients_are_per_image_and_per_class():
    model, x, _ = trained_image_model()
    grads = log_probability_gradients(model, x[:5], torch.arange(4))
    alone = log_probability_gradients(model, x[2:3], torch.tensor([1]))
    assert grads.shape == (5, 4, 3, 6, 6)
    torch.testing.assert_close(grads[2, 1], alone[0, 0])


def test_targeted_confidence_is_high_for_the_model_itself_and_low_for_a_random_one():
    model, x, y = trained_image_model()
    itself = targeted_confidence(model, model, x[:12], y[:12], num_classes=4, eps=3.0, steps=20)
    random_model = image_model(seed=7).eval()
    # A random model's targeted images barely move the trained reference towards the targets.
    unrelated = targeted_confidence(random_model, model, x[:12], y[:12], num_classes=4, eps=0.3, steps=20)
    assert itself["pairs"] == 12 * 3
    assert itself["score"] > 0.9
    assert unrelated["score"] < 0.5 < itself["score"]


def test_models_are_left_as_they_were():
    model, x, y = trained_image_model()
    model.train().zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradient_alignment(model, model, x[:4], num_classes=4)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


class ShiftDenoiser(nn.Module):
    """D(x, σ, y) = x + σ² shift[y]: its score-based target for class c is shift[c] - shift[null], anywhere."""

    def __init__(self, shifts):
        super().__init__()
        self.shifts, self.num_classes, self.null_class = shifts, len(shifts) - 1, len(shifts) - 1

    def forward(self, noisy, sigma, labels):
        return noisy + sigma.reshape(-1, 1, 1, 1) ** 2 * self.shifts[labels]


def test_score_alignment_is_one_for_a_model_whose_gradients_are_the_score_based_targets():
    torch.manual_seed(0)
    w = torch.randn(2, 1, 1, 4)
    denoiser = ShiftDenoiser(torch.cat([w, w.mean(0, keepdim=True)]))  # the unconditional shift halfway
    # For two classes and logits W x, d log p(c | x) / dx = (1 - p_c)(W_c - W_other): along w_c - w_other,
    # as the targets ±(w_0 - w_1) / 2 are.
    linear = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        linear[1].weight.copy_(w.flatten(1))
    images = torch.rand(6, 1, 1, 4)
    aligned = score_alignment(linear, denoiser, images, sigma=0.3, num_classes=2)
    assert aligned["score"] == pytest.approx(1.0, abs=1e-5) and aligned["images"] == 6
    with torch.no_grad():
        linear[1].weight.copy_(torch.randn(2, 4))
    assert score_alignment(linear, denoiser, images, sigma=0.3, num_classes=2)["score"] < 0.99
