"""Eq. (1)-(2): the cosine loss, the class input-gradients and the PAG loss."""

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from pagcore.paper.objective import (
    GRADIENT_STRATEGIES,
    class_input_gradients,
    cosine_loss,
    pag_loss,
    sample_target_classes,
)


@pytest.fixture(autouse=True, scope="module")
def float64_default():
    """Every test here compares against exact or hand-computed values: run it in float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def linear_model(weight, bias):
    model = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(bias)
    return model


class TestCosineLoss:
    def test_matches_definition(self):
        v, u = torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]])
        assert cosine_loss(v, u).item() == pytest.approx(1 - 24 / 25)

    def test_parallel_antiparallel_orthogonal(self):
        u = torch.tensor([[1.0, 2.0, 2.0]])
        assert cosine_loss(2 * u, u).item() == pytest.approx(0.0, abs=1e-12)
        assert cosine_loss(-u, u).item() == pytest.approx(2.0)
        assert cosine_loss(torch.tensor([[2.0, -1.0, 0.0]]), u).item() == pytest.approx(1.0)

    def test_zero_gradient_is_finite_and_gives_one(self):
        v = torch.zeros(1, 3, requires_grad=True)
        u = torch.tensor([[1.0, 2.0, 2.0]])
        loss = cosine_loss(v, u, eps=1e-8)
        loss.sum().backward()
        assert loss.item() == 1.0
        assert torch.isfinite(v.grad).all()
        # Below eps the denominator is eps itself: d/dv (1 - v.u / eps) = -u / eps.
        torch.testing.assert_close(v.grad, -u / 1e-8)

    def test_eps_is_the_floor_of_the_denominator(self):
        v, u = torch.tensor([[1e-3, 0.0]]), torch.tensor([[1e-3, 0.0]])  # |v||u| = 1e-6
        assert cosine_loss(v, u, eps=1e-4).item() == pytest.approx(1 - 1e-6 / 1e-4)
        assert cosine_loss(v, u, eps=1e-8).item() == pytest.approx(0.0, abs=1e-12)

    def test_low_precision_inputs_are_computed_in_float32(self):
        v = torch.randn(4, 100).to(torch.bfloat16)
        u = torch.randn(4, 100, dtype=torch.float32)
        assert cosine_loss(v, u).dtype == torch.float32
        assert cosine_loss(v, u.double()).dtype == torch.float64


class TestHandComputedCase:
    """f(x) = W x + b with W = I: the input-gradient of logit c is the row W_c."""

    def setup_method(self):
        self.model = linear_model(torch.eye(2), torch.zeros(2))
        self.x = torch.zeros(1, 2)
        self.y = torch.tensor([0])
        self.classes = torch.tensor([[0, 1]])
        # g(x, 0) = (1, 0) is parallel to W_0; g(x, 1) = (1, 0) is orthogonal to W_1.
        self.targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])

    def test_logit_gradient(self):
        out = pag_loss(self.model, self.x, self.y, self.classes, self.targets, lam=0.5, num_classes=2)
        # logits (0, 0): CE = log 2; cosine terms 0 + 1.
        assert out.cross_entropy.item() == pytest.approx(math.log(2))
        assert out.cosine.item() == pytest.approx(1.0)
        assert out.total.item() == pytest.approx(math.log(2) + 0.5)

    def test_log_softmax_gradient(self):
        out = pag_loss(
            self.model, self.x, self.y, self.classes, self.targets, lam=1.0, num_classes=2, gradient="log_softmax"
        )
        # grad log p_0 = W_0 - (W_0 + W_1)/2 = (0.5, -0.5): cos with (1, 0) is 1/sqrt 2;
        # grad log p_1 = (-0.5, 0.5): cos is -1/sqrt 2. Loss terms (1 - 1/sqrt2) + (1 + 1/sqrt2) = 2.
        assert out.cosine.item() == pytest.approx(2.0)

    def test_lambda_zero_is_plain_cross_entropy(self):
        out = pag_loss(self.model, self.x, self.y, self.classes, None, lam=0.0, num_classes=2)
        assert out.total.item() == pytest.approx(math.log(2))
        assert out.cosine.item() == 0.0

    def test_negative_lambda_is_rejected(self):
        with pytest.raises(ValueError, match="lam"):
            pag_loss(self.model, self.x, self.y, self.classes, self.targets, lam=-0.1, num_classes=2)


def small_convnet(batch_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(4) if batch_norm else nn.Identity()
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        norm,
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2),
        nn.Softplus(),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 5),
    )


def naive_pag_cosine(model, x, classes, targets, gradient="logit"):
    """Eq. (1)'s class sum by the definition: one sample and one class at a time (eval mode)."""
    total = 0.0
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        logits = model(xi)
        scores = logits if gradient == "logit" else torch.log_softmax(logits, dim=1)
        for j, c in enumerate(classes[i].tolist()):
            (g,) = torch.autograd.grad(scores[0, c], xi, create_graph=True)
            v, u = g.flatten(), targets[i, j].flatten()
            total = total + 1 - (v @ u) / torch.clamp(v.norm() * u.norm(), min=1e-8)
    return total / len(x)


def parameter_gradients(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()), allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("strategy", GRADIENT_STRATEGIES)
@pytest.mark.parametrize("gradient", ["logit", "log_softmax"])
def test_pag_loss_equals_naive_per_sample_loop(strategy, gradient):
    model = small_convnet(batch_norm=True).eval()  # eval: samples do not interact
    x = torch.rand(4, 3, 8, 8)
    classes = sample_target_classes(4, 5)
    targets = torch.randn(4, 5, 3, 8, 8)
    out = pag_loss(
        model,
        x,
        torch.zeros(4, dtype=torch.long),
        classes,
        targets,
        lam=1.0,
        num_classes=5,
        gradient=gradient,
        strategy=strategy,
    )
    naive = naive_pag_cosine(model, x, classes, targets, gradient)
    torch.testing.assert_close(out.cosine, naive, rtol=1e-10, atol=1e-12)
    for fast, slow in zip(parameter_gradients(model, out.cosine), parameter_gradients(model, naive)):
        torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)


def two_batch_norm_convnet() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 5),
    ).train()


def held_statistics_reference(model, x, classes):
    """The definition, computed independently of pagcore: every image alone, through a copy of the
    model in eval mode whose running statistics are the batch's. Momentum 1 makes them so; the
    running variance is the unbiased one while train mode normalises by the biased one, so it is
    scaled back by (n - 1) / n, n being the number of values per channel."""
    frozen = copy.deepcopy(model)
    layers = [m for m in frozen.modules() if isinstance(m, nn.BatchNorm2d)]
    counts = {}

    def count(layer, inputs, output):
        counts[layer] = inputs[0].numel() // inputs[0].shape[1]

    hooks = [layer.register_forward_hook(count) for layer in layers]
    for layer in layers:
        layer.momentum = 1.0
    with torch.no_grad():
        frozen(x)
    for hook in hooks:
        hook.remove()
    for layer in layers:
        layer.running_var.mul_((counts[layer] - 1) / counts[layer])
    frozen.eval()
    grads = torch.zeros(*classes.shape, *x.shape[1:])
    for i in range(len(x)):
        for j, c in enumerate(classes[i].tolist()):
            xi = x[i : i + 1].clone().requires_grad_(True)
            (grads[i, j],) = torch.autograd.grad(frozen(xi)[0, c], xi)
    return grads


def fully_coupled_gradients(model, x, classes):
    """d f(X)[i, c] / d x_i with the batch statistics depending on every image, x_i included."""
    grads = torch.zeros(*classes.shape, *x.shape[1:])
    state = copy.deepcopy(model.state_dict())
    for i in range(len(x)):
        for j, c in enumerate(classes[i].tolist()):
            xs = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xs)[i, c], xs)
            grads[i, j] = g[i]
    model.load_state_dict(state)
    return grads


def cosines(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(2), b.flatten(2), dim=2)


@pytest.mark.parametrize("strategy", GRADIENT_STRATEGIES)
@pytest.mark.parametrize("batch_size", [8, 32])
@pytest.mark.parametrize("k", [5, 2])
def test_train_mode_batch_norm_gradients_hold_the_batch_statistics(strategy, batch_size, k):
    model = two_batch_norm_convnet()
    x = torch.rand(batch_size, 3, 8, 8)
    classes = sample_target_classes(batch_size, 5, k=k, generator=torch.Generator().manual_seed(2))
    reference = held_statistics_reference(model, x, classes)
    _, grads = class_input_gradients(model, x, classes, strategy=strategy)
    assert cosines(grads, reference).min() >= 0.999
    torch.testing.assert_close(grads, reference, rtol=1e-8, atol=1e-10)
    # The definition is not the fully coupled derivative: this test could tell them apart.
    assert not torch.allclose(grads, fully_coupled_gradients(model, x, classes), rtol=1e-6, atol=1e-8)


def test_train_mode_batch_norm_updates_running_statistics_once():
    model = two_batch_norm_convnet()
    plain = copy.deepcopy(model)
    x = torch.rand(8, 3, 8, 8)
    with torch.no_grad():
        plain(x)
    class_input_gradients(model, x, sample_target_classes(8, 5), strategy="vmap")
    for ours, theirs in zip(model.buffers(), plain.buffers()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # And the layers are left as they were: an ordinary forward afterwards.
    assert all("forward" not in vars(m) for m in model.modules())


def naive_train_mode_cosine(model, x, classes, targets):
    """Eq. (1)'s class sum for small_convnet(batch_norm=True) in train mode, by the definition: the
    batch statistics of its one batch-norm layer come from the whole batch (and so depend on the
    weights), and are held fixed w.r.t. each image's own input."""
    conv, norm, rest = model[0], model[1], model[2:]
    h = conv(x)
    mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
    total = 0.0
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        hi = (conv(xi) - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + norm.eps)
        logits = rest(hi * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1))
        for j, c in enumerate(classes[i].tolist()):
            (g,) = torch.autograd.grad(logits[0, c], xi, create_graph=True)
            v, u = g.flatten(), targets[i, j].flatten()
            total = total + 1 - (v @ u) / torch.clamp(v.norm() * u.norm(), min=1e-8)
    return total / len(x)


@pytest.mark.parametrize("strategy", GRADIENT_STRATEGIES)
def test_train_mode_parameter_gradients_keep_the_statistics_path(strategy):
    model = small_convnet(batch_norm=True).train()
    with torch.no_grad():  # a non-trivial affine map, so that its gradient is tested too
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x = torch.rand(6, 3, 8, 8)
    classes = sample_target_classes(6, 5, k=3, generator=torch.Generator().manual_seed(3))
    targets = torch.randn(6, 3, 3, 8, 8)
    out = pag_loss(model, x, torch.zeros(6, dtype=torch.long), classes, targets, 1.0, num_classes=5, strategy=strategy)
    naive = naive_train_mode_cosine(model, x, classes, targets) * (5 / 3)
    torch.testing.assert_close(out.cosine, naive, rtol=1e-10, atol=1e-12)
    for fast, slow in zip(parameter_gradients(model, out.cosine), parameter_gradients(model, naive)):
        torch.testing.assert_close(fast, slow, rtol=1e-8, atol=1e-11)


def test_gradients_have_one_entry_per_target_class():
    model = small_convnet(batch_norm=False)
    x = torch.rand(3, 3, 8, 8)
    classes = torch.tensor([[4, 0], [1, 1], [2, 3]])
    logits, grads = class_input_gradients(model, x, classes, strategy="vmap")
    assert logits.shape == (3, 5)
    assert grads.shape == (3, 2, 3, 8, 8)
    # Row 1 asks for class 1 twice: both entries must be the same gradient.
    torch.testing.assert_close(grads[1, 0], grads[1, 1])


class TestSampledClasses:
    def test_full_set_when_k_is_c(self):
        classes = sample_target_classes(3, 4)
        assert classes.tolist() == [[0, 1, 2, 3]] * 3

    def test_rows_are_distinct_and_uniform(self):
        classes = sample_target_classes(20000, 5, k=2, generator=torch.Generator().manual_seed(0))
        assert (classes[:, 0] != classes[:, 1]).all()
        frequency = torch.bincount(classes.flatten(), minlength=5).double() / classes.numel()
        torch.testing.assert_close(frequency, torch.full((5,), 0.2), atol=0.01, rtol=0)

    def test_rejects_k_out_of_range(self):
        with pytest.raises(ValueError, match="k"):
            sample_target_classes(2, 5, k=6)

    def test_average_over_all_subsets_is_the_full_sum(self):
        model = small_convnet(batch_norm=False)
        x = torch.rand(2, 3, 8, 8)
        targets_full = torch.randn(2, 5, 3, 8, 8)
        y = torch.zeros(2, dtype=torch.long)
        full = pag_loss(model, x, y, sample_target_classes(2, 5), targets_full, 1.0, num_classes=5).cosine
        subsets = list(itertools.combinations(range(5), 2))
        estimates = []
        for subset in subsets:
            classes = torch.tensor([subset, subset])
            targets = targets_full[torch.arange(2).unsqueeze(1), classes]
            estimates.append(pag_loss(model, x, y, classes, targets, 1.0, num_classes=5).cosine)
        torch.testing.assert_close(torch.stack(estimates).mean(), full, rtol=1e-10, atol=1e-12)

    def test_monte_carlo_mean_matches_the_full_loss(self):
        model = small_convnet(batch_norm=False)
        x = torch.rand(2, 3, 8, 8)
        y = torch.zeros(2, dtype=torch.long)
        targets_full = torch.randn(2, 5, 3, 8, 8)
        full = pag_loss(model, x, y, sample_target_classes(2, 5), targets_full, 1.0, num_classes=5).cosine.item()
        generator = torch.Generator().manual_seed(0)
        draws = []
        with torch.no_grad():
            for _ in range(3000):
                classes = sample_target_classes(2, 5, k=1, generator=generator)
                targets = targets_full[torch.arange(2).unsqueeze(1), classes]
                with torch.enable_grad():
                    draws.append(pag_loss(model, x, y, classes, targets, 1.0, num_classes=5).cosine.item())
        draws = torch.tensor(draws)
        standard_error = draws.std().item() / math.sqrt(len(draws))
        assert abs(draws.mean().item() - full) < 5 * standard_error


@pytest.mark.parametrize("strategy", GRADIENT_STRATEGIES)
def test_pag_loss_through_attention_equals_the_naive_per_sample_loop(strategy):
    """The ViT's attention is differentiated twice by the PAG loss: every strategy must agree with the
    definition, one sample and one class at a time, weights' gradients included."""
    from pagcore.paper.models import ViT

    torch.manual_seed(0)
    model = ViT(5, image_size=8, patch=4, width=8, depth=2).double().eval()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    classes = sample_target_classes(3, 5)  # the full sum: no C / k scaling to account for
    targets = torch.randn(3, 5, 3, 8, 8, dtype=torch.float64)
    out = pag_loss(
        model, x, torch.zeros(3, dtype=torch.long), classes, targets, lam=1.0, num_classes=5, strategy=strategy
    )
    naive = naive_pag_cosine(model, x, classes, targets)
    torch.testing.assert_close(out.cosine, naive, rtol=1e-10, atol=1e-12)
    for fast, slow in zip(parameter_gradients(model, out.cosine), parameter_gradients(model, naive)):
        torch.testing.assert_close(fast, slow, rtol=1e-8, atol=1e-12)
