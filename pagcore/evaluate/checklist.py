"""Is it gradient masking? A checklist after Carlini et al., *On Evaluating Adversarial Robustness* (2019).

PAG training reshapes the very input-gradients that PGD follows, so a high PGD accuracy could
mean the gradients stopped pointing anywhere useful rather than that the model is robust.
Each check below measures something that a genuinely robust model and a gradient-masking one
do differently, and returns its numbers with a pass or a fail:

1. ``eps_monotone``: robust accuracy does not rise as eps grows (beyond ``tolerance``);
2. ``eps_reaches_zero``: at a radius that covers the whole image range, accuracy is ~0;
3. ``more_iterations``: the paper's PGD-20 has converged: PGD-100 with 5 restarts (best iterate)
   is not much stronger;
4. ``black_box``: the black-box Square attack (AutoAttack's, 5,000 queries) is not stronger than
   the strongest white-box attack: that PGD-100, and then, on the images that survive it,
   AutoAttack's targeted APGD (9 target classes, the DLR loss). A model that saturates its softmax
   starves the cross-entropy gradient PGD follows, but not the scale-free DLR margin, so only an
   attack that beats both says that the gradients hide what is there;
5. ``transfer``: adversarial examples crafted on a separate (vanilla) source model do not fool
   the model more than that strongest white-box attack does;
6. ``gradients``: no test image has an all-zero or non-finite input-gradient.

Check 3 compares an attack with more of itself, not with a stronger loss: targeted APGD finds several
points more than PGD-20 on adversarially trained models too, which do not mask gradients, so that gap
belongs in the AutoAttack columns of the results, not in a masking check. A passed check is evidence, not proof;
a failed one says the white-box numbers of that model cannot be trusted as they are. Every check
can fail: the tests run the checklist on models that mask gradients by construction (an
input-quantisation step, a saturated softmax) and see it fail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pagcore.base.modes import eval_mode
from pagcore.base.validation import ConfigError, check_nonnegative, check_positive_int
from pagcore.evaluate.autoattack import AutoAttackConfig, run_autoattack
from pagcore.paper.attacks import PGD


@dataclass(frozen=True)
class CheckResult:
    name: str
    criterion: str  # the rule, in words, with its tolerance
    passed: bool | None  # None: not run (e.g. no source model for the transfer check)
    numbers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ChecklistConfig:
    """What the checklist runs. The defaults are the ones for real runs; tests shrink the budgets."""

    # Multiples of eps for the accuracy curve; the largest must cover the image range (see check 2).
    eps_multipliers: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 32.0)
    curve_steps: int = 20
    baseline_steps: int = 20  # the paper's PGD-20: last iterate, one start
    strong_steps: int = 100
    strong_restarts: int = 5
    targeted_iterations: int | None = None  # targeted APGD after PGD; None: AutoAttack's standard 100
    square_queries: int | None = None  # None: AutoAttack's standard 5,000
    monotone_tolerance: float = 0.01  # a rise of accuracy allowed between radii (random starts)
    zero_accuracy: float = 0.02  # "~0" at the largest radius
    iterations_tolerance: float = 0.02  # how much stronger PGD-100 x 5 restarts may be than PGD-20
    black_box_tolerance: float = 0.01  # how much stronger Square may be than the strongest white-box attack
    transfer_tolerance: float = 0.01  # how much stronger transfer may be than the strongest white-box attack
    zero_gradient_fraction: float = 0.0  # images allowed an all-zero input-gradient
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("curve_steps", "baseline_steps", "strong_steps", "strong_restarts"):
            check_positive_int(name, getattr(self, name))
        if self.targeted_iterations is not None:
            check_positive_int("targeted_iterations", self.targeted_iterations)
        for name in (
            "monotone_tolerance",
            "zero_accuracy",
            "iterations_tolerance",
            "black_box_tolerance",
            "transfer_tolerance",
            "zero_gradient_fraction",
        ):
            check_nonnegative(name, getattr(self, name))
        if list(self.eps_multipliers) != sorted(self.eps_multipliers) or len(self.eps_multipliers) < 2:
            raise ConfigError(f"eps_multipliers must be at least two increasing values; got {self.eps_multipliers!r}")

    def settings(self) -> dict:
        # The references of the checks belong to what is stored: a checklist judged against other
        # references is another evaluation, stored apart.
        references = {
            "more_iterations": "the strong PGD against the baseline PGD",
            "black_box": "Square against the strongest white-box attack",
            "transfer": "transfer against the strongest white-box attack",
        }
        return {
            "check": "gradient_masking",
            **asdict(self),
            "eps_multipliers": list(self.eps_multipliers),
            "references": references,
        }


def robust_mask(model: nn.Module, x: Tensor, y: Tensor, attack: PGD, seed: int) -> Tensor:
    """Per image: still classified correctly after ``attack`` (random starts drawn from ``seed``)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = attack(model, x, y, generator=generator)
    with eval_mode(model), torch.no_grad():
        return model(x_adv).argmax(1) == y


def input_gradients(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """d CE(model(x), y) / dx per image, in float32 and eval mode."""
    x = x.detach().float().requires_grad_(True)
    with eval_mode(model), torch.autocast(x.device.type, enabled=False):
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def check_eps_curve(model, x, y, norm: str, eps: float, settings: ChecklistConfig, attack_at=None) -> list[CheckResult]:
    """Checks 1 and 2. ``attack_at(radius)`` builds the attack (default: PGD-``curve_steps``, best
    iterate); tests pass a deliberately broken one to see the checks fail."""
    radii = [m * eps for m in settings.eps_multipliers]
    masks = curve_masks(model, x, y, radii, attack_at or _curve_attack(norm, settings), settings.seed)
    return _judge_eps_curve(radii, [mask.float().mean().item() for mask in masks], settings)


def _curve_attack(norm: str, settings: ChecklistConfig):
    return lambda radius: PGD.paper_real_data(norm, radius, settings.curve_steps, keep_best=True)


def curve_masks(model, x, y, radii: list[float], attack_at, seed: int) -> list[Tensor]:
    """Per radius, which images are still classified correctly (at radius 0: without attack)."""
    masks = []
    for radius in radii:
        if radius == 0:
            with eval_mode(model), torch.no_grad():
                masks.append(model(x).argmax(1) == y)
        else:
            masks.append(robust_mask(model, x, y, attack_at(radius), seed))
    return masks


def _judge_eps_curve(radii: list[float], accuracies: list[float], settings: ChecklistConfig) -> list[CheckResult]:
    rises = [later - earlier for earlier, later in zip(accuracies, accuracies[1:])]
    numbers = {"eps": radii, "accuracy": accuracies, "largest_rise": max(rises)}
    return [
        CheckResult(
            "eps_monotone",
            f"accuracy never rises by more than {settings.monotone_tolerance} as eps grows",
            max(rises) <= settings.monotone_tolerance,
            numbers,
        ),
        CheckResult(
            "eps_reaches_zero",
            f"accuracy at eps = {radii[-1]:.4g} is at most {settings.zero_accuracy}",
            accuracies[-1] <= settings.zero_accuracy,
            {"eps": radii[-1], "accuracy": accuracies[-1]},
        ),
    ]


def gradient_masking_checklist(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float,
    source: nn.Module | None = None,
    settings: ChecklistConfig = ChecklistConfig(),
    device: torch.device | str = "cpu",
) -> list[CheckResult]:
    """Run every check on ``x``, ``y`` (floats in [0, 1]) at radius ``eps`` of ``norm``.

    ``source`` is the model transfer attacks are crafted on (a vanilla model); without it the
    transfer check is reported as not run. The same as :func:`judge_checklist` of
    :func:`measure_checklist`, the two halves a chunked evaluation runs separately.
    """
    measured = measure_checklist(model, x, y, norm=norm, eps=eps, source=source, settings=settings, device=device)
    return judge_checklist(measured, norm=norm, eps=eps, settings=settings)


def measure_checklist(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float,
    source: nn.Module | None = None,
    settings: ChecklistConfig = ChecklistConfig(),
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> dict[str, list]:
    """What the checks look at, per image (JSON-ready lists), so that measurements of separate
    chunks of a test set concatenate into those of the whole: ``curve`` (a robust mask per
    radius of ``settings.eps_multipliers``; the clean mask at radius 0), ``baseline`` and
    ``strong`` (PGD masks), ``white_box`` (robust to ``strong`` and then to targeted APGD),
    ``square``, ``transfer`` (None without a source), and the
    input-gradients' ``gradient_finite``, ``gradient_zero`` and ``gradient_norm``.
    ``seed`` (default ``settings.seed``) seeds the random starts and Square."""
    device = torch.device(device)
    seed = settings.seed if seed is None else seed
    x, y = x.to(device).float(), y.to(device)
    with torch.autocast(device.type, enabled=False):
        radii = [m * eps for m in settings.eps_multipliers]
        curve = curve_masks(model, x, y, radii, _curve_attack(norm, settings), seed)
        baseline, strong = _baseline_and_strong(norm, eps, settings)
        strong_mask = robust_mask(model, x, y, strong, seed)
        white_box = strong_mask.clone()
        survivors = strong_mask.nonzero().flatten()
        if len(survivors):  # targeted APGD only where PGD failed: the per-image worst case of both
            targeted = run_autoattack(
                model, x[survivors], y[survivors], _targeted(norm, eps, settings, seed), device=device
            )
            white_box[survivors] = torch.tensor(targeted["robust_mask"], device=device)
        square = run_autoattack(model, x, y, _square(norm, eps, settings, seed), device=device)
        transfer = None
        if source is not None:
            crafted = strong(source, x, y, generator=torch.Generator(device=device).manual_seed(seed))
            with eval_mode(model), torch.no_grad():
                transfer = model(crafted).argmax(1) == y
        grads = input_gradients(model, x, y).flatten(1)
        finite = torch.isfinite(grads).all(dim=1)
        return {
            "curve": [mask.tolist() for mask in curve],
            "baseline": robust_mask(model, x, y, baseline, seed).tolist(),
            "strong": strong_mask.tolist(),
            "white_box": white_box.tolist(),
            "square": square["robust_mask"],
            "transfer": None if transfer is None else transfer.tolist(),
            "gradient_finite": finite.tolist(),
            "gradient_zero": (finite & (grads.abs().amax(dim=1) == 0)).tolist(),
            "gradient_norm": grads.norm(dim=1).tolist(),
        }


def concatenate_measurements(parts: list[dict[str, list]]) -> dict[str, list]:
    """The measurements of consecutive chunks of a test set, joined into those of the whole."""
    joined = {"curve": [sum((part["curve"][i] for part in parts), []) for i in range(len(parts[0]["curve"]))]}
    for key in parts[0]:
        if key != "curve":
            values = [part[key] for part in parts]
            joined[key] = None if any(v is None for v in values) else sum(values, [])
    return joined


def _square(norm: str, eps: float, settings: ChecklistConfig, seed: int) -> AutoAttackConfig:
    return AutoAttackConfig(norm, eps, seed=seed, attacks=("square",), square_queries=settings.square_queries)


def _targeted(norm: str, eps: float, settings: ChecklistConfig, seed: int) -> AutoAttackConfig:
    return AutoAttackConfig(norm, eps, seed=seed, attacks=("apgd-t",), apgd_iterations=settings.targeted_iterations)


def _baseline_and_strong(norm: str, eps: float, settings: ChecklistConfig) -> tuple[PGD, PGD]:
    baseline = PGD.paper_real_data(norm, eps, settings.baseline_steps)
    strong = PGD.paper_real_data(norm, eps, settings.strong_steps, restarts=settings.strong_restarts, keep_best=True)
    return baseline, strong


def judge_checklist(
    measured: dict[str, list], *, norm: str, eps: float, settings: ChecklistConfig = ChecklistConfig()
) -> list[CheckResult]:
    """Every check's numbers and verdict from :func:`measure_checklist`'s per-image measurements."""

    def fraction(mask: list) -> float:
        return sum(mask) / len(mask)

    radii = [m * eps for m in settings.eps_multipliers]
    results = _judge_eps_curve(radii, [fraction(mask) for mask in measured["curve"]], settings)
    baseline, strong = _baseline_and_strong(norm, eps, settings)
    baseline_accuracy, strong_accuracy = fraction(measured["baseline"]), fraction(measured["strong"])
    white_box_accuracy = fraction(measured["white_box"])
    results.append(
        CheckResult(
            "more_iterations",
            f"PGD-{settings.strong_steps} x {settings.strong_restarts} restarts (best iterate) lowers accuracy by at "
            f"most {settings.iterations_tolerance} below PGD-{settings.baseline_steps}",
            baseline_accuracy - strong_accuracy <= settings.iterations_tolerance,
            {
                "baseline": baseline_accuracy,
                "strong": strong_accuracy,
                "white_box": white_box_accuracy,
                "baseline_attack": baseline.settings(),
                "strong_attack": strong.settings(),
                "targeted_attack": _targeted(norm, eps, settings, settings.seed).settings(),
            },
        )
    )
    square_accuracy = fraction(measured["square"])
    results.append(
        CheckResult(
            "black_box",
            f"Square's accuracy is at least the strongest white-box attack's (PGD-{settings.strong_steps} x "
            f"{settings.strong_restarts}, then targeted APGD) minus {settings.black_box_tolerance}",
            square_accuracy >= white_box_accuracy - settings.black_box_tolerance,
            {
                "square": square_accuracy,
                "white_box": white_box_accuracy,
                "fooled_only_by_square": sum(s and not q for s, q in zip(measured["white_box"], measured["square"])),
                "square_settings": _square(norm, eps, settings, settings.seed).settings(),
            },
        )
    )
    if measured["transfer"] is None:
        results.append(CheckResult("transfer", "not run: no source model", None, {}))
    else:
        transfer_accuracy = fraction(measured["transfer"])
        results.append(
            CheckResult(
                "transfer",
                f"attacks crafted on the source model leave accuracy at least the strongest white-box attack's "
                f"minus {settings.transfer_tolerance}",
                transfer_accuracy >= white_box_accuracy - settings.transfer_tolerance,
                {"transfer": transfer_accuracy, "white_box": white_box_accuracy},
            )
        )
    finite, zero = measured["gradient_finite"], measured["gradient_zero"]
    finite_norms = torch.tensor([n for n, ok in zip(measured["gradient_norm"], finite) if ok])
    results.append(
        CheckResult(
            "gradients",
            f"no non-finite input-gradient, and at most a fraction {settings.zero_gradient_fraction} all zero",
            all(finite) and fraction(zero) <= settings.zero_gradient_fraction,
            {
                "nonfinite_fraction": 1 - fraction(finite),
                "zero_fraction": fraction(zero),
                "median_norm": finite_norms.median().item() if len(finite_norms) else float("nan"),
            },
        )
    )
    return results


def tally(results: list[CheckResult]) -> dict:
    """``{"passed": [...], "failed": [...], "not_run": [...]}`` by check name."""
    return {
        "passed": [r.name for r in results if r.passed is True],
        "failed": [r.name for r in results if r.passed is False],
        "not_run": [r.name for r in results if r.passed is None],
    }
