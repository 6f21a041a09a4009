"""AutoAttack through pyautoattack on a tiny model (reduced budgets: a code test, not a result)."""

import pytest
import torch
from tiny_models import trained_image_model

from pagcore.base.validation import ConfigError
from pagcore.evaluate.autoattack import STANDARD_ATTACKS, AutoAttackConfig, run_autoattack
from pagcore.evaluate.checklist import robust_mask
from pagcore.paper.attacks import PGD

REDUCED = dict(apgd_iterations=10, fab_iterations=10, square_queries=100)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_autoattack_runs_stays_in_the_ball_and_is_at_least_as_strong_as_pgd20(norm, eps):
    model, x, y = trained_image_model()
    model.train()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    result = run_autoattack(model, x[:32], y[:32], AutoAttackConfig(norm, eps, **REDUCED))
    assert torch.rand(1) == expected_next  # the package's reseeding did not touch our random stream
    assert model.training  # mode restored
    assert result["max_perturbation"] <= eps * (1 + 1e-5)
    assert result["robust"] <= result["clean"] and result["images"] == 32
    assert sum(result["robust_mask"]) == round(result["robust"] * 32)
    assert list(result["after_attack"]) == list(STANDARD_ATTACKS)
    assert result["after_attack"]["square"] == pytest.approx(result["robust"], abs=1e-4)
    pgd20 = robust_mask(model, x[:32], y[:32], PGD.paper_real_data(norm, eps), seed=0).float().mean().item()
    assert result["robust"] <= pgd20 + 1 / 32 and result["robust"] < result["clean"]
    settings = result["settings"]
    assert settings["package"] == "pyautoattack" and settings["package_version"] == "0.2.0"
    assert settings["version"] == "reduced (tests only)" and settings["eps"] == eps


def test_standard_settings_are_labelled_standard():
    settings = AutoAttackConfig("linf", 8 / 255).settings()
    assert settings["version"] == "standard" and settings["square_queries"] == 5000
    assert settings["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert AutoAttackConfig("l2", 0.5, attacks=("square",)).settings()["version"] == "standard, attacks square"


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="attacks"):
        AutoAttackConfig("linf", 0.03, attacks=("pgd",))
    with pytest.raises(ConfigError, match="norm"):
        AutoAttackConfig("l1", 0.03)
