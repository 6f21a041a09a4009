"""Every run the book shows, defined once, in the order to make them.

Per scale: Table 1's rows on CIFAR-10 (vanilla and class mean first: the baseline and the main
model-free source; then the other sources, the adversarially trained teachers and their RIGD
students), Table 4's other seeds of one image, Figure 5's other values of λ for class mean,
Table 2's rows on STL-10, the later version's score-based row on each dataset that has a denoiser
(:data:`SCORE_DENOISERS`), at the ``cpu`` scale the k study (the number of target classes
sampled per image, the scale's one shortcut of Eq. (1), on class mean and then nearest neighbour),
the other seeds of vanilla and nearest neighbour, whose spread the rule of evidence uses, and last,
at the ``cpu`` scale, the short runs of class mean and the score-based source with each
input-gradient kind, the base classifiers of the randomized-smoothing chapter, and the later version's
claims: its second architecture, the ViT, and the seeds of adversarial training without the PAG term
and with it, for each source of targets (:data:`~pagcore.orchestrate.experiments.BOOST_LAMBDAS`).

The chapters take their seeds, λ values and k values from here, the status page compares
these runs with the paper, and whatever makes missing runs (``python -m pagcore table``, a GPU
window) makes them in this order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pagcore.base.validation import ConfigError, check_choice
from pagcore.config import GRADIENTS, preset_for
from pagcore.orchestrate.experiments import BOOST_LAMBDAS, BOOST_THREATS, ROWS, boost_row
from pagcore.paper import reported

TABLE_ROWS: tuple[str, ...] = (
    "vanilla",
    "class_mean",
    "one_image",
    "nearest_neighbor",
    "adversarial_linf",
    "adversarial_l2",
    "rigd_linf",
    "rigd_l2",
)
"""A results table's rows in the order to train them: every RIGD teacher before its student."""

SEEDS: tuple[int, ...] = tuple(range(reported.SEED_ERROR_BARS["seeds"]))
"""Table 4: one image on CIFAR-10, trained with each of these seeds."""

NOISE_ROWS: tuple[str, ...] = ("one_image", "vanilla", "nearest_neighbor")
"""The rows trained with every seed of ``SEEDS`` on CIFAR-10, whose spreads the rule of evidence
uses: Table 4's one image, the baseline every row is judged against, and nearest neighbour, the
model-free row that fits its labels best."""

NOISE_DATASET = "cifar10"
"""The dataset of the rule's seeds; another dataset borrows their spreads
(:meth:`pagcore.book.evidence.Noise.borrowed`)."""

LAMBDAS: tuple[float, ...] = tuple(reported.LAMBDA_ABLATION)
"""Figure 5: class mean on CIFAR-10 at each of these values of λ."""

K_VALUES: tuple[int, ...] = (1, 2, 5, 10)
"""The k study: k target classes per image on CIFAR-10; 10 is the full sum of Eq. (1)."""

SMOOTHING_SIGMAS: tuple[float, ...] = (0.25, 0.5)
"""The randomized-smoothing chapter: base classifiers trained with Gaussian noise of these σ on
CIFAR-10 (two of Cohen et al.'s three; the third, 1.0, certifies little at the ℓ2 radius 0.5)."""

GRADIENT_KIND_EPOCHS = 5
"""The gradient-kind comparison (class mean and the score-based source, each with the logit and the
log-softmax input-gradient, all else equal) trains this many epochs: enough to see whether a kind fits
the labels at all, a quarter of a full cpu-scale run."""

SCORE_DENOISERS: dict[str, str] = {
    "cifar10": "cifar10-denoiser-w16-e25-s0-46f47cdf6b",
    "stl10": "stl10-denoiser-w16-e25-s0-e7d06d4e5f",
}
"""The denoiser run (in ``runs/denoisers``, committed) whose targets each dataset's score-based rows use,
at every scale; a dataset without one has no score-based row."""

SCORE_LAMBDA_CHOSEN: dict[str, float] = {"stl10": reported.SCORE_LAMBDA["cifar10"]}
"""λ of the score-based row where no value is published: the authors' CIFAR-10 ResNet-18 value, since
nothing in the paper suggests another for STL-10 and the book has not tuned one."""


def score_overrides(dataset: str, gradient: str = reported.SCORE_GRADIENT) -> dict[str, Any]:
    """A score-based row's overrides: the book's denoiser of ``dataset``, the input-gradient kind (the
    authors' unless named) and, where no λ is published, the book's stated choice."""
    if dataset not in SCORE_DENOISERS:
        raise ConfigError(f"{dataset} has no denoiser of the book's, so no score-based row")
    # A dataset with neither a published nor a chosen λ gets none here: its config then says so.
    chosen = {"lam": SCORE_LAMBDA_CHOSEN[dataset]} if dataset in SCORE_LAMBDA_CHOSEN else {}
    return {"denoiser": SCORE_DENOISERS[dataset], "gradient": gradient, **chosen}


def results_rows(dataset: str) -> tuple[str, ...]:
    """A results table's rows as the book shows and evaluates them: ``TABLE_ROWS``, then the score-based
    row where the dataset has a denoiser of the book's."""
    return (*TABLE_ROWS, *(("score",) if dataset in SCORE_DENOISERS else ()))


def row_overrides(dataset: str, row: str) -> dict[str, Any]:
    """What a row needs beyond its own knobs: a row with score-based targets its denoiser, gradient kind
    and λ (which a λ among the row's own knobs overrides); every other row nothing."""
    check_choice("row", row, tuple(ROWS))
    return score_overrides(dataset) if ROWS[row].knobs.get("source") == "score" else {}


ARCHITECTURE_PAG_ROWS: tuple[str, ...] = ("nearest_neighbor", "score")
"""The PAG rows of the later version's second architecture, the ViT, on CIFAR-10 at the cpu scale:
nearest neighbour, the model-free row that fits its labels best on the ResNet-18, and the score-based
row, the later version's own targets and the ones the authors' ViT configuration trains with."""

ARCHITECTURE_ROWS: tuple[str, ...] = ("vanilla", *ARCHITECTURE_PAG_ROWS)
"""The ViT's rows: vanilla, the baseline its PAG rows are judged against, and those rows, each trained
with every seed of ``SEEDS``: the ResNet-18's spread need not be the ViT's, and a row without its own
must take the widest measured, which on this scale is a near-chance row's."""

VIT_SCORE_LAMBDA = reported.SCORE_LAMBDA_VIT["cifar10"] * reported.SCORE_LAMBDA_VIT_EARLY
"""λ of the ViT's score-based row: the authors' ViT value with their factor for the epochs up to
``reported.SCORE_LAMBDA_VIT_EARLY_EPOCHS``, which is every epoch of a run that short (the cpu scale's).
The nearest-neighbour row keeps the paper's ResNet value: none is published for a ViT."""


def architecture_overrides(row: str, epochs: int, seed: int = 0) -> dict[str, Any]:
    """A ViT row's overrides on CIFAR-10, for a run of ``epochs`` with ``seed``: the architecture, and the
    score-based row's denoiser, kind and λ. The λ holds only for a run no longer than the authors' early
    phase."""
    if row == "score" and epochs > reported.SCORE_LAMBDA_VIT_EARLY_EPOCHS:
        raise ConfigError(
            f"the ViT's score-based λ ({VIT_SCORE_LAMBDA:g}) is the authors' value for their first "
            f"{reported.SCORE_LAMBDA_VIT_EARLY_EPOCHS} epochs, and this book has no λ schedule: "
            f"train at most that many epochs (got {epochs})"
        )
    extra = {"lam": VIT_SCORE_LAMBDA} if row == "score" else {}
    # Seed 0 is the default, left out so that the first seed's run is the one every table reads.
    seeded = {"seed": seed} if seed else {}
    return {"architecture": "vit", **row_overrides("cifar10", row), **extra, **seeded}


K_STUDY_SOURCES: tuple[str, ...] = ("class_mean", "nearest_neighbor")
"""The rows the k study varies k on: class mean, and nearest neighbour because at the cpu scale class
mean stays under the accuracy the distances to the class means allow, where k has nothing left to
change, while nearest neighbour fits its labels above that ceiling."""


@dataclass(frozen=True)
class BookRun:
    """One run the book needs: a row of a results table, with its overrides, at a scale."""

    chapter: str
    dataset: str
    row: str
    overrides: dict[str, Any] = field(default_factory=dict)
    scale: str = "paper"

    @property
    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.overrides.items()))
        scale = "" if self.scale == "paper" else f" ({self.scale} scale)"
        return f"{self.dataset} {self.row}{extra}{scale}"


def book_runs(scale: str) -> tuple[BookRun, ...]:
    """The runs the book shows at ``scale``, in the order to make them (see the module docstring).
    A value that equals the table row's own (seed 0, the paper's λ, the preset's k) is that row."""
    preset_k = preset_for(scale, "cifar10").classes_per_image
    table_lam = reported.LAMBDA["cifar10"]["class_mean"]
    return (
        *(BookRun("table", "cifar10", row, scale=scale) for row in TABLE_ROWS),
        *(BookRun("seeds", "cifar10", "one_image", {"seed": s}, scale) for s in SEEDS if s != 0),
        *(BookRun("lambda", "cifar10", "class_mean", {"lam": lam}, scale) for lam in LAMBDAS if lam != table_lam),
        *(BookRun("table", "stl10", row, scale=scale) for row in TABLE_ROWS),
        *(BookRun("score", dataset, "score", score_overrides(dataset), scale) for dataset in SCORE_DENOISERS),
        *(
            BookRun("k_study", "cifar10", source, {"classes_per_image": k}, scale)
            for source in K_STUDY_SOURCES
            for k in (K_VALUES if scale == "cpu" else ())
            if k != preset_k
        ),
        *(
            BookRun("seeds", "cifar10", row, {"seed": s}, scale)
            for row in NOISE_ROWS
            if row != "one_image"
            for s in SEEDS
            if s != 0
        ),
        *(
            BookRun("gradient_kind", "cifar10", source, {**base, "gradient": g, "epochs": GRADIENT_KIND_EPOCHS}, scale)
            for source, base in (("class_mean", {}), ("score", score_overrides("cifar10")))
            for g in (GRADIENTS if scale == "cpu" else ())
        ),
        *(
            BookRun("smoothing", "cifar10", "gaussian_noise", {"noise_sigma": s}, scale)
            for s in (SMOOTHING_SIGMAS if scale == "cpu" else ())
        ),
        *(
            BookRun(
                "architecture",
                "cifar10",
                row,
                architecture_overrides(row, preset_for(scale, "cifar10").epochs, seed),
                scale,
            )
            for row in (ARCHITECTURE_ROWS if scale == "cpu" else ())
            for seed in SEEDS
        ),
        *(
            BookRun("boost", "cifar10", boost_row(threat), {"seed": s}, scale)
            for threat in (BOOST_THREATS if scale == "cpu" else ())
            for s in SEEDS
            if s != 0  # seed 0 is the table's RIGD teacher
        ),
        *(
            BookRun("boost", "cifar10", row, {**row_overrides("cifar10", row), "seed": s}, scale)
            for source in (BOOST_LAMBDAS if scale == "cpu" else ())
            for threat in BOOST_THREATS
            for row in (boost_row(threat, source),)
            for s in SEEDS
        ),
    )
