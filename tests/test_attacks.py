"""PGD (Algorithm 1): stays in its ball and bounds, attacks work, the model's mode survives."""

import pytest
import torch
from tiny_models import image_model, trained_image_model

from pagcore.base.validation import ConfigError
from pagcore.paper.attacks import L2_START_HALF_WIDTH, PGD, L2Ball, LinfBall, accuracy


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(16, 3, 6, 6, generator=generator), torch.randint(0, 4, (16,), generator=generator)


def perturbation_norms(x_adv, x, norm):
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("target", [False, True])
def test_stays_in_ball_and_bounds(batch, norm, eps, random_start, target):
    x, y = batch
    attack = PGD(norm, eps, step_size=eps / 2, steps=7, random_start=random_start, bounds=(0.0, 1.0))
    x_adv = attack(
        image_model(), x, y, target=(y + 1) % 4 if target else None, generator=torch.Generator().manual_seed(1)
    )
    assert (perturbation_norms(x_adv, x, norm) <= eps + 1e-6).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert not x_adv.requires_grad


def test_unbounded_attack_can_leave_the_box():
    x = torch.full((4, 3, 6, 6), 0.99)
    y = torch.zeros(4, dtype=torch.long)
    x_adv = PGD("linf", 0.1, step_size=0.05, steps=4, bounds=None)(image_model(), x, y)
    assert x_adv.max() > 1.0


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 2.0)])
def test_untargeted_attack_lowers_accuracy_and_targeted_raises_target_probability(batch, norm, eps):
    x, y = batch
    model = image_model().eval()
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # labels the model gets right
    attack = PGD(norm, eps, step_size=eps / 4, steps=10)
    assert accuracy(model, attack(model, x, y), y) < accuracy(model, x, y)

    target = (y + 1) % 4
    x_adv = attack(model, x, y, target=target)
    with torch.no_grad():
        before = model(x).softmax(1).gather(1, target[:, None]).squeeze(1)
        after = model(x_adv).softmax(1).gather(1, target[:, None]).squeeze(1)
    assert (after > before).all()


@pytest.mark.parametrize("training", [True, False])
def test_model_is_in_eval_mode_during_the_attack_and_restored_after(batch, training):
    x, y = batch
    model = image_model().train(training)
    modes = []
    model[0].register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    running_mean = model[1].running_mean.clone()
    PGD("linf", 0.05, step_size=0.01, steps=3)(model, x, y)
    assert modes and not any(modes)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    torch.testing.assert_close(model[1].running_mean, running_mean)  # attack left BN statistics alone
    assert all(p.grad is None for p in model.parameters())


def test_model_mode_restored_even_when_the_model_fails(batch):
    x, y = batch
    model = image_model().train()
    with pytest.raises(RuntimeError):
        PGD("l2", 0.5, step_size=0.1, steps=2)(model, x[:, :2], y)  # wrong channel count
    assert model.training


def test_random_starts_follow_the_papers_evaluation_code():
    like = torch.zeros(500, 3, 32, 32)
    generator = torch.Generator().manual_seed(0)
    linf = LinfBall(0.3).random_start(like, generator)
    l2 = L2Ball(0.5).random_start(like, generator)
    assert linf.abs().max() <= 0.3 and linf.abs().max() > 0.29  # uniform over the whole [-eps, eps]
    # L2: TRADES' per-pixel noise of half-width 8/255 whatever eps is, so ~1.0 in norm on CIFAR-10.
    assert l2.abs().max() <= L2_START_HALF_WIDTH and l2.abs().max() > 0.99 * L2_START_HALF_WIDTH
    torch.testing.assert_close(
        L2Ball(3.0).random_start(like, torch.Generator().manual_seed(1)),
        L2Ball(0.1).random_start(like, torch.Generator().manual_seed(1)),
    )
    expected_norm = L2_START_HALF_WIDTH * (3 * 32 * 32 / 3) ** 0.5
    assert abs(l2.flatten(1).norm(dim=1).mean().item() - expected_norm) < 0.01


def test_projections():
    delta = torch.tensor([[3.0, 4.0], [0.1, -0.2]])
    torch.testing.assert_close(L2Ball(1.0).project(delta), torch.tensor([[0.6, 0.8], [0.1, -0.2]]))
    torch.testing.assert_close(LinfBall(0.15).project(delta), torch.tensor([[0.15, 0.15], [0.1, -0.15]]))


@pytest.mark.parametrize(
    "kwargs,parameter",
    [
        (dict(norm="l3", eps=1.0, step_size=0.1, steps=1), "norm"),
        (dict(norm="l2", eps=-1.0, step_size=0.1, steps=1), "eps"),
        (dict(norm="l2", eps=1.0, step_size=0.1, steps=0), "steps"),
        (dict(norm="l2", eps=1.0, step_size=0.0, steps=1), "step_size"),
        (dict(norm="l2", eps=1.0, step_size=0.1, steps=1, bounds=(1.0, 0.0)), "bounds"),
        (dict(norm="l2", eps=1.0, step_size=0.1, steps=1, restarts=0), "restarts"),
        (dict(norm="l2", eps=1.0, step_size=0.1, steps=1, restarts=2), "random_start"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs, parameter):
    with pytest.raises(ConfigError, match=parameter):
        PGD(**kwargs)


def test_paper_real_data_settings():
    attack = PGD.paper_real_data("linf", 8 / 255)
    assert attack.steps == 20 and attack.random_start and attack.bounds == (0.0, 1.0)
    assert attack.step_size == pytest.approx(2 * (8 / 255) / 20)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])  # radii that break some images, not all
@pytest.mark.parametrize("restarts,keep_best", [(1, True), (3, False), (3, True)])
def test_stronger_pgd_is_never_weaker_than_the_last_iterate(norm, eps, restarts, keep_best):
    model, x, y = trained_image_model()
    paper = PGD.paper_real_data(norm, eps, steps=5)
    stronger = PGD.paper_real_data(norm, eps, steps=5, restarts=restarts, keep_best=keep_best)
    for seed in range(3):
        last = paper(model, x, y, generator=torch.Generator().manual_seed(seed))
        best = stronger(model, x, y, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            fooled_last = model(last).argmax(1) != y
            fooled_best = model(best).argmax(1) != y
        assert not (fooled_last & ~fooled_best).any(), "an image the paper's attack fools survived the stronger one"
        assert (perturbation_norms(best, x, norm) <= eps + 1e-6).all() and best.min() >= 0 and best.max() <= 1
    assert accuracy(model, x, y) > accuracy(model, best, y)


def test_best_iterate_beats_a_last_iterate_that_overshoots():
    """With a step far too large the last iterate oscillates; the best iterate keeps the hit."""
    model, x, y = trained_image_model()
    overshooting = dict(norm="linf", eps=0.05, step_size=0.1, steps=5, random_start=True, bounds=(0.0, 1.0))
    last = PGD(**overshooting)(model, x, y, generator=torch.Generator().manual_seed(0))
    best = PGD(**overshooting, keep_best=True)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert accuracy(model, best, y) < accuracy(model, last, y)


def test_targeted_best_iterate_keeps_the_first_success():
    model, x, y = trained_image_model()
    target = (y + 1) % 4
    attack = PGD("l2", 2.0, step_size=0.5, steps=8, keep_best=True, bounds=(0.0, 1.0))
    x_adv = attack(model, x, y, target=target)
    plain = PGD("l2", 2.0, step_size=0.5, steps=8, bounds=(0.0, 1.0))(model, x, y, target=target)
    with torch.no_grad():
        hits_best = (model(x_adv).argmax(1) == target).sum()
        hits_last = (model(plain).argmax(1) == target).sum()
    assert hits_best >= hits_last > 0


def test_settings_describe_the_attack():
    settings = PGD.paper_real_data("l2", 0.5, steps=100, restarts=5, keep_best=True).settings()
    assert settings["steps"] == 100 and settings["restarts"] == 5 and settings["iterate"] == "best"
    assert settings["step_size"] == pytest.approx(0.01) and settings["precision"] == "float32"
    assert "8/255" in settings["random_start"]
    assert PGD.paper_real_data("linf", 0.031).settings()["iterate"] == "last"


def test_l2_starts_images_trades_style_and_other_data_inside_the_ball():

    like = torch.zeros(2000, 2)
    generator = torch.Generator().manual_seed(0)
    ball = L2Ball(15.0, "ball").random_start(like, generator).norm(dim=1)
    assert ball.max() <= 15.0 and ball.median() > 7.0  # uniform in a disc: median radius 15 / sqrt(2)
    trades = L2Ball(15.0, "trades").random_start(like, generator)
    assert trades.abs().max() <= L2_START_HALF_WIDTH  # per-pixel noise, whatever the radius
    with pytest.raises(ConfigError, match="l2_start"):
        L2Ball(1.0, "sphere")


def unpruned_best_pgd(attack, model, x, y, generator):
    """A plain reference of PGD with keep_best and restarts: every image through every step of
    every restart, the unperturbed image and all projected iterates judged. Returns which
    images it fooled."""
    ball = LinfBall(attack.eps) if attack.norm == "linf" else L2Ball(attack.eps)
    with torch.no_grad():
        fooled = model(x).argmax(1) != y
    for _ in range(attack.restarts):
        delta = ((x + ball.random_start(x, generator)).clamp(0, 1) - x).detach()
        for _ in range(attack.steps):
            delta.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(x + delta), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = ((x + ball.project(ball.step(delta, grad, attack.step_size))).clamp(0, 1) - x).detach()
                fooled |= model(x + delta).argmax(1) != y
    return fooled


class CountingModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x):
        self.images += len(x)
        return self.model(x)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_best_iterate_pgd_attacks_only_unfooled_images_and_fools_exactly_the_same_ones(norm, eps):
    model, x, y = trained_image_model()
    model, x = model.double(), x.double()  # float64: the batch's size cannot change a single image's numbers
    attack = PGD.paper_real_data(norm, eps, steps=6, restarts=3, keep_best=True)
    counted = CountingModel(model)
    x_adv = attack(counted, x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    reference = unpruned_best_pgd(attack, model, x, y, torch.Generator().manual_seed(0))
    assert 0 < fooled.sum() < len(x)  # the radius breaks some images, not all
    assert torch.equal(fooled, reference)
    assert (perturbation_norms(x_adv, x, norm) <= eps + 1e-9).all()
    # Without pruning: one clean pass, then (steps + 1) passes per restart, over every image.
    assert counted.images < 0.8 * len(x) * (1 + attack.restarts * (attack.steps + 1))
