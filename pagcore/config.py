"""Every knob of a real-data run, each defined once, grouped by what it is about.

A :class:`TrainConfig` is four small groups and a scale:

* :class:`DataConfig`: the dataset, the ResNet-18 width, augmentation, smoke-test subsets;
* :class:`ScheduleConfig`: epochs, batch, SGD and its learning-rate steps, the seed;
* :class:`ObjectiveConfig`: the training objective (``cross_entropy``, ``pag``, ``adversarial``,
  ``gaussian_noise`` for the base classifiers of randomized smoothing), the PAG target source,
  lambda, k target classes per image and the gradient kind;
* :class:`AdversaryConfig`: the threat model and budget of adversarial training;
* ``scale``: ``"paper"`` or ``"cpu"``, a preset per dataset (:data:`SCALES`) for the knobs a
  machine can afford to shrink: width, epochs, k and the adversary's steps.

Fields left at ``None`` are filled by :meth:`TrainConfig.resolve`, once, at the boundary: first
from the scale's preset, then from the paper (Table 3's lambda, the batch size and attack radius
of the dataset). Explicit values always win. :meth:`TrainConfig.resolve` also validates, so a
resolved config is a valid one.

The command line (:func:`add_arguments`) and the notebooks (:meth:`TrainConfig.from_flat`) are
derived from the fields and their metadata, so a knob added to a group reaches both. A run's
identity (:meth:`TrainConfig.identity`) is what was trained: the resolved groups that matter
for its objective. How a run is executed (device, precision, time budget) and how it is
evaluated are not part of it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from pagcore.base.validation import (
    ConfigError,
    check_choice,
    check_classes_per_image,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from pagcore.data import DATASETS, SPECS
from pagcore.paper import reported
from pagcore.paper.attacks import THREATS
from pagcore.paper.models import ARCHITECTURES
from pagcore.paper.objective import GRADIENT_STRATEGIES, GRADIENTS
from pagcore.paper.targets import MODEL_FREE_SOURCES

OBJECTIVES: tuple[str, ...] = ("cross_entropy", "pag", "adversarial", "gaussian_noise")
"""The training objective: cross-entropy alone (the "vanilla" model), Eq. (1), Madry adversarial
training (the RIGD teachers, and a comparison row beyond the paper), or cross-entropy on images
with Gaussian noise (the base classifiers of randomized smoothing)."""

SOURCES: tuple[str, ...] = (*MODEL_FREE_SOURCES, "rigd", "score")
"""Where the PAG objective's target gradients come from (Section 4)."""

RIGD_TARGETS: tuple[str, ...] = ("precompute", "on_the_fly")
SCALE_NAMES: tuple[str, ...] = ("paper", "cpu")
KINDS: tuple[str, ...] = ("real", "smoke", "pilot")
"""``real`` runs are results; ``smoke`` runs test code and ``pilot`` runs choose a preset, and
neither is ever shown as a result."""


def knob(default: Any, help: str, *, choices: tuple[str, ...] | None = None, flag: str | None = None) -> Any:
    """A dataclass field with what the command line needs to offer it."""
    metadata = {"help": help, "choices": choices, "flag": flag}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = knob("cifar10", "the dataset", choices=DATASETS)
    architecture: str = knob("resnet18", "the classifier: ResNet-18, or the later paper's ViT", choices=ARCHITECTURES)
    width: int | None = knob(
        None, "ResNet-18 width, or the ViT's (default: the scale's; the paper's ResNet is 64, the authors' ViT 384)"
    )
    depth: int | None = knob(None, "ViT: transformer blocks (default: the authors' 7)")
    augment: bool = knob(True, "random crop (padding 4) and horizontal flip")
    train_subset: int | None = knob(None, "use only the first N training images (smoke tests)")
    test_subset: int | None = knob(None, "use only the first N test images (smoke tests)")


@dataclass(frozen=True)
class ScheduleConfig:
    epochs: int | None = knob(None, "training epochs (default: the scale's; the paper's is 100)")
    batch_size: int | None = knob(None, "batch size (default: the paper's, 64 on CIFAR-10 and 32 on STL-10)")
    lr: float = knob(reported.SGD["lr"], "SGD learning rate")
    momentum: float = knob(reported.SGD["momentum"], "SGD momentum")
    weight_decay: float = knob(reported.SGD["weight_decay"], "SGD weight decay")
    lr_milestones: list[float] = knob([0.5, 0.75], "fractions of the epochs at which the learning rate steps")
    lr_factors: list[float] = knob([0.1, 0.01], "learning-rate multiplier from each milestone on")
    seed: int = knob(0, "initial weights, batch order, augmentation and sampled classes")

    def lr_at(self, epoch: int) -> float:
        """Step schedule (the authors' released code): the factor of the last milestone passed."""
        factor = 1.0
        for milestone, f in zip(self.lr_milestones, self.lr_factors):
            if epoch >= milestone * self.epochs:
                factor = f
        return self.lr * factor


@dataclass(frozen=True)
class ObjectiveConfig:
    objective: str = knob("pag", "what the model is trained on", choices=OBJECTIVES)
    source: str = knob("class_mean", "PAG target source (objective pag)", choices=SOURCES)
    lam: float | None = knob(None, "lambda of Eq. (1) (default: the paper's Table 3)")
    classes_per_image: int | None = knob(
        None, "k target classes sampled per image (default: the scale's; all C = the full sum of Eq. 1)"
    )
    gradient: str = knob("logit", "the score whose input-gradient is aligned", choices=GRADIENTS)
    pool_size: int = knob(1000, "nearest-neighbour candidates per class")
    rescale_class_mean: bool = knob(True, "stretch class means to the average image norm")
    teacher: str = knob("", "RIGD: run name or directory of an adversarially trained model")
    rigd_targets: str = knob(
        "precompute", "RIGD: a table of teacher gradients or the teacher at every step", choices=RIGD_TARGETS
    )
    denoiser: str = knob("", "score: run name or directory of a trained denoiser (python -m pagcore denoiser)")
    score_sigma: float = knob(0.2, "score: the noise level of the score-based targets (pixel units)")
    score_draws: int = knob(1, "score: noise draws averaged per target")
    noise_sigma: float = knob(0.25, "gaussian_noise: σ of the noise added to every training image (Cohen et al.)")

    @property
    def has_pag_term(self) -> bool:
        """Whether the loss has Eq. (1)'s cosine term (resolved configs): objective ``pag``, or
        adversarial training with λ > 0, the later paper's PAG-boosted adversarial training."""
        return bool(self.lam)


@dataclass(frozen=True)
class AdversaryConfig:
    threat: str = knob("linf", "threat model of adversarial training", choices=THREATS)
    eps: float | None = knob(None, "its radius (default: the paper's for the dataset)", flag="adversary-eps")
    steps: int | None = knob(None, "its PGD steps (default: the scale's; Madry et al.'s 7)", flag="adversary-steps")


@dataclass(frozen=True)
class ScalePreset:
    """The knobs a scale may shrink; the method (loss, sources, lambda, schedule shape) stays."""

    width: int
    epochs: int
    classes_per_image: int | None  # None: all C classes
    adversary_steps: int
    final: bool  # False while the preset awaits its pilot: real runs refuse to start
    note: str


# Width 32 at the cpu scale: in the pilot (benchmarks/results/cpu_pilot-accuracy-cifar10-vit4.json) vanilla
# reaches 60.5 % clean at width 32 and 63.8 % at width 64, where a step costs 1.2x (PAG, k = 2) to 1.3x
# (vanilla) as much in bf16 with the loop strategy the runs use (the throughput file beside it). The rule
# judges each PAG row against vanilla of the same ViT and asks of clean accuracy only that it pass twice
# chance (60.5 % is six times chance), so the cheaper ViT is taken: every training and evaluation pays it.
VIT_WIDTH: dict[str, int] = {"paper": 384, "cpu": 32}
"""The ViT's width per scale: the authors' configuration at the paper's scale, a pilot's choice at the
cpu scale."""

# Four blocks at the cpu scale: fixed by hand, a little over half the authors' seven, to fit two cores;
# the pilot measured the step at this depth (a PAG step with k = 2 costs five vanilla steps) and chose
# only the width.
VIT_DEPTH: dict[str, int] = {"paper": 7, "cpu": 4}
"""The ViT's transformer blocks per scale: the authors' seven at the paper's scale."""


PAPER_PRESET = ScalePreset(
    width=64,
    epochs=100,
    classes_per_image=None,
    adversary_steps=7,
    final=True,
    note="the paper's setting (Appendix C.2): ResNet-18, 100 epochs, the full class sum",
)

# Width 8: in the pilot vanilla passes 80 % clean and a class-mean run trains in under an hour; width 16
# costs 1.6x per step and, like width 8, leaves class mean under the accuracy that the distances to
# the class means allow (results/cpu_pilot-accuracy-cifar10.json).
CIFAR10_CPU_PRESET = ScalePreset(
    width=8,
    epochs=20,
    classes_per_image=2,
    adversary_steps=3,
    final=True,
    note="chosen by the CIFAR-10 pilot (benchmarks/cpu_pilot.py) on two CPU cores",
)

# Width 16, 40 epochs: STL-10 has a tenth of CIFAR-10's training images, so an epoch is cheap and
# the preset can afford twice CIFAR-10's width and epochs. After 40 epochs, vanilla reaches 68.0 %
# and class mean 50.4 % at width 16, against 64.5 % and 46.6 % at width 8, for 1.4x the time of
# a PAG epoch (24 s against 17 s); a PAG row trains in ~17 minutes
# (results/cpu_pilot-*-stl10*.json).
STL10_CPU_PRESET = ScalePreset(
    width=16,
    epochs=40,
    classes_per_image=2,
    adversary_steps=3,
    final=True,
    note="chosen by the STL-10 pilot (benchmarks/cpu_pilot.py --dataset stl10) on two CPU cores",
)

# scale -> dataset -> preset. The cpu presets are chosen per dataset by benchmarks/cpu_pilot.py on
# two CPU cores; the figures behind each choice are in the book's cpu-scale appendix.
SCALES: dict[str, dict[str, ScalePreset]] = {
    "paper": {"cifar10": PAPER_PRESET, "stl10": PAPER_PRESET},
    "cpu": {
        "cifar10": CIFAR10_CPU_PRESET,
        "stl10": STL10_CPU_PRESET,
    },
}


def preset_for(scale: str, dataset: str) -> ScalePreset:
    """The knobs ``scale`` sets for ``dataset``."""
    return SCALES[check_choice("scale", scale, SCALE_NAMES)][check_choice("dataset", dataset, DATASETS)]


@dataclass(frozen=True)
class ExecutionConfig:
    """How a run is executed; none of it names the run, all of it is in each session's record."""

    device: str = knob("auto", "cpu, cuda, cuda:1, ... (auto: cuda when there is one)")
    strategy: str = knob(
        "auto",
        "how the k input-gradients are computed (auto: the device's fastest)",
        choices=("auto", *GRADIENT_STRATEGIES),
    )
    amp: bool | None = knob(None, "bf16 autocast for the training step (default: on CUDA and on CPUs with bf16)")
    channels_last: bool | None = knob(None, "channels-last activations (default: with bf16 autocast)")
    checkpoint_every: int | None = knob(None, "also checkpoint every N steps (always at the end of an epoch)")
    max_minutes: float | None = knob(None, "stop cleanly, resumably, after this many minutes")
    retrain: bool = knob(False, "discard an existing run of these parameters and start again")
    evaluate: bool = knob(True, "evaluate the run once trained (PGD-20 and the PAG pictures)")
    kind: str | None = knob(None, "real, smoke or pilot (default: real for the full real dataset)", choices=KINDS)
    progress: bool = knob(True, "show progress bars")

    def validate(self) -> ExecutionConfig:
        for f in fields(self):
            if f.metadata.get("choices") and getattr(self, f.name) is not None:
                check_choice(f.name, getattr(self, f.name), f.metadata["choices"])
        if self.checkpoint_every is not None:
            check_positive_int("checkpoint_every", self.checkpoint_every)
        if self.max_minutes is not None:
            check_positive("max_minutes", self.max_minutes)
        return self


GROUPS: dict[str, type] = {
    "data": DataConfig,
    "schedule": ScheduleConfig,
    "objective": ObjectiveConfig,
    "adversary": AdversaryConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; see the module docstring."""

    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    scale: str = "paper"

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from flat knob names (``{"dataset": "stl10", "lam": 0.1, "scale": "cpu"}``).

        This is how notebooks and the command line build one; an unknown name is an error
        that lists the known ones.
        """
        values = dict(values)
        scale = values.pop("scale", "paper")
        groups = {}
        for group_name, group in GROUPS.items():
            names = {f.name for f in fields(group)}
            groups[group_name] = group(**{k: values.pop(k) for k in list(values) if k in names})
        if values:
            raise ConfigError(f"unknown parameter(s) {sorted(values)}; the knobs are {sorted(knob_names())}")
        return cls(**groups, scale=scale)

    @classmethod
    def from_identity(cls, identity: dict[str, Any]) -> TrainConfig:
        """The resolved config a run's ``params.json`` (its :meth:`identity` and kind) describes."""
        flat = {k: v for k, v in identity.items() if k in knob_names()}
        adversary = identity.get("adversary")
        if adversary:
            flat.update(threat=adversary["threat"], eps=adversary["eps"], steps=adversary["steps"])
        return cls.from_flat(flat).resolve()

    # -- resolution and validation ----------------------------------------------------------------

    @property
    def preset(self) -> ScalePreset:
        return preset_for(self.scale, self.data.dataset)

    def resolve(self) -> TrainConfig:
        """Every ``None`` filled in (scale preset, then the paper), then validated. Idempotent."""
        check_choice("scale", self.scale, SCALE_NAMES)
        check_choice("dataset", self.data.dataset, DATASETS)
        check_choice("objective", self.objective.objective, OBJECTIVES)
        preset, dataset = self.preset, self.data.dataset
        num_classes = SPECS[dataset].num_classes
        o = self.objective
        lam = o.lam
        if lam is None:
            lam = reported.default_lambda(dataset, o.source) if o.objective == "pag" else 0.0
        k = o.classes_per_image
        if k is None:
            k = preset.classes_per_image or num_classes
        a = self.adversary
        check_choice("threat", a.threat, THREATS)
        resolved = TrainConfig(
            data=self._resolved_data(preset),
            schedule=replace(
                self.schedule,
                epochs=_default(self.schedule.epochs, preset.epochs),
                batch_size=_default(self.schedule.batch_size, reported.BATCH_SIZE[dataset]),
            ),
            # A denoiser is named by its run name (in the denoisers' store), however it was given.
            objective=replace(o, lam=lam, classes_per_image=k, denoiser=Path(o.denoiser).name if o.denoiser else ""),
            adversary=replace(
                a, eps=_default(a.eps, reported.EPS[dataset][a.threat]), steps=_default(a.steps, preset.adversary_steps)
            ),
            scale=self.scale,
        )
        resolved._validate()
        return resolved

    def _resolved_data(self, preset: ScalePreset) -> DataConfig:
        d = self.data
        check_choice("architecture", d.architecture, ARCHITECTURES)
        if d.architecture == "resnet18":
            if d.depth is not None:
                raise ConfigError(f"depth sets the ViT's blocks; the ResNet-18 has none to set (got {d.depth})")
            return replace(d, width=_default(d.width, preset.width))
        return replace(
            d, width=_default(d.width, VIT_WIDTH[self.scale]), depth=_default(d.depth, VIT_DEPTH[self.scale])
        )

    def _validate(self) -> None:
        d, s, o, a = self.data, self.schedule, self.objective, self.adversary
        for group in (d, s, o, a):
            for f in fields(group):
                if f.metadata.get("choices"):
                    check_choice(f.name, getattr(group, f.name), f.metadata["choices"])
        check_positive_int("width", d.width)
        if d.depth is not None:
            check_positive_int("depth", d.depth)
        for name in ("train_subset", "test_subset"):
            if getattr(d, name) is not None:
                check_positive_int(name, getattr(d, name))
        check_positive_int("epochs", s.epochs)
        check_positive_int("batch_size", s.batch_size)
        check_positive("lr", s.lr)
        check_nonnegative("momentum", s.momentum)
        check_nonnegative("weight_decay", s.weight_decay)
        if len(s.lr_milestones) != len(s.lr_factors) or any(not 0 < m < 1 for m in s.lr_milestones):
            raise ConfigError(
                "lr_milestones (fractions of the epochs, each in (0, 1)) and lr_factors must have the same "
                f"length; got {s.lr_milestones} and {s.lr_factors}"
            )
        check_nonnegative("lam", o.lam)
        if o.objective not in ("pag", "adversarial") and o.lam != 0:
            raise ConfigError(f"lam must be 0 for objective {o.objective!r} (it has no PAG term); got {o.lam}")
        if o.objective == "pag" and o.lam == 0:
            raise ConfigError("lam must be > 0 for objective 'pag'; use objective='cross_entropy' for lam = 0")
        check_classes_per_image(o.classes_per_image, SPECS[d.dataset].num_classes)
        check_positive_int("pool_size", o.pool_size)
        if o.has_pag_term and o.source == "rigd" and not o.teacher:
            raise ConfigError(
                "teacher must name an adversarially trained run (run name or directory) for source 'rigd'"
            )
        if o.has_pag_term and o.source == "score" and not o.denoiser:
            raise ConfigError(
                "denoiser must name a trained denoiser run (python -m pagcore denoiser) for source 'score'"
            )
        check_positive("score_sigma", o.score_sigma)
        check_positive("noise_sigma", o.noise_sigma)
        check_positive_int("score_draws", o.score_draws)
        check_nonnegative("adversary_eps", a.eps)
        check_positive_int("adversary_steps", a.steps)

    # -- identity ---------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What names a run (call on a resolved config): the groups its objective uses."""
        o = self.objective
        objective: dict[str, Any] = {"objective": o.objective}
        if o.has_pag_term:
            objective.update(source=o.source, lam=o.lam, classes_per_image=o.classes_per_image, gradient=o.gradient)
            if o.source == "nearest_neighbor":
                objective["pool_size"] = o.pool_size
            if o.source == "class_mean":
                objective["rescale_class_mean"] = o.rescale_class_mean
            if o.source == "rigd":
                objective.update(teacher=o.teacher, rigd_targets=o.rigd_targets)
            if o.source == "score":
                objective.update(denoiser=o.denoiser, score_sigma=o.score_sigma, score_draws=o.score_draws)
        data = asdict(self.data)
        if self.data.architecture == "resnet18":  # the book's first classifier: named as before the ViT came
            del data["architecture"], data["depth"]
        identity = {"scale": self.scale, **data, **asdict(self.schedule), **objective}
        if o.objective == "adversarial":
            identity["adversary"] = asdict(self.adversary)
        if o.objective == "gaussian_noise":
            identity["noise_sigma"] = o.noise_sigma
        return identity

    def readable_name(self) -> str:
        """The readable part of the run's name: enough to tell apart every row the book shows (the
        hash beside it in the store tells apart everything else)."""
        o, s = self.objective, self.schedule
        if o.objective == "adversarial" and not o.has_pag_term:
            what = f"adversarial-{self.adversary.threat}"
        elif o.objective == "cross_entropy":
            what = "vanilla"
        elif o.objective == "gaussian_noise":
            what = f"noise{o.noise_sigma:g}"
        else:
            source = o.source if o.source != "rigd" else "-".join(filter(None, ("rigd", teacher_threat(o.teacher))))
            if o.source == "score":
                source += f"-sigma{o.score_sigma:g}"
            what = f"{source}-lam{o.lam:g}"
            if o.objective == "adversarial":  # PAG-boosted adversarial training
                what = f"adversarial-{self.adversary.threat}-{what}"
            every_class = SPECS[self.data.dataset].num_classes  # what a k of None means
            if (o.classes_per_image or every_class) != (self.preset.classes_per_image or every_class):
                what += f"-k{o.classes_per_image or every_class}"
            if o.gradient != ObjectiveConfig.gradient:
                what += f"-{o.gradient}"
        scale = "" if self.scale == "paper" else f"-{self.scale}"
        width = "" if self.data.width == self.preset.width else f"-w{self.data.width}"
        if self.data.architecture == "vit":
            width = f"-vit{self.data.depth}-w{self.data.width}"
        return f"{self.data.dataset}{scale}{width}-{what}-e{s.epochs}-s{s.seed}"


def teacher_threat(teacher: str) -> str | None:
    """The threat model a RIGD teacher was trained against, read from its run name (which
    :meth:`TrainConfig.readable_name` writes as ``...-adversarial-<threat>-...``); None if unknown."""
    match = re.search(r"-adversarial-(" + "|".join(THREATS) + r")-", Path(teacher).name)
    return match.group(1) if match else None


def _default(value: Any, default: Any) -> Any:
    """``value`` unless it is None (0 and empty values are kept, and rejected by validation)."""
    return default if value is None else value


def knob_names() -> list[str]:
    return ["scale", *(f.name for group in GROUPS.values() for f in fields(group))]


# -- the command line -------------------------------------------------------------------------------


def _flag(f) -> str:
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))


def add_group_arguments(parser: argparse.ArgumentParser, title: str, group: type) -> None:
    """One option per field of ``group``; defaults stay unset (None), so that only what the user
    typed overrides the dataclass defaults and the scale's preset."""
    options = parser.add_argument_group(title)
    hints = get_type_hints(group)
    for f in fields(group):
        default = f.default if f.default is not MISSING else f.default_factory()
        shown = f" (default: {default})" if default not in (None, "") else ""
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": f.metadata["help"] + shown}
        hint = hints[f.name]
        if hint in (bool, bool | None):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif hint in (list[float], list[int]):
            kwargs.update(type=hint.__args__[0], nargs="+")
        else:
            kwargs["type"] = float if hint in (float, float | None) else int if hint in (int, int | None) else str
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        options.add_argument(_flag(f), **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a :class:`TrainConfig`: ``--scale`` and one group per config group."""
    parser.add_argument("--scale", choices=SCALE_NAMES, default=None, help="preset: paper (default) or cpu")
    for group_name, group in GROUPS.items():
        add_group_arguments(parser, group_name, group)


def given(args: argparse.Namespace, group: type) -> dict[str, Any]:
    """The fields of ``group`` the user set on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(group) if getattr(args, f.name, None) is not None}


def given_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The flat knobs (``--scale`` included) the user set among the options of :func:`add_arguments`."""
    return {name: getattr(args, name) for name in knob_names() if getattr(args, name, None) is not None}


def from_arguments(args: argparse.Namespace) -> TrainConfig:
    """The config the options of :func:`add_arguments` describe (only the options given)."""
    return TrainConfig.from_flat(given_knobs(args))


def from_namespace(group: type, namespace: dict[str, Any]) -> Any:
    """An instance of the dataclass ``group`` from the names a notebook defines (its parameters
    cell), taking every field it finds there: the notebook's knobs are the dataclass's fields."""
    return group(**{f.name: namespace[f.name] for f in fields(group) if f.name in namespace})
