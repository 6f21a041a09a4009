"""Interactive explorers for the notebooks (ipywidgets).

* :class:`ToyExplorer`: sliders and menus for lambda, the target source and the gradient
  kind; every change retrains the toy PAG model (seconds on a CPU) and redraws its decision
  boundary and accuracies.
* :class:`StoredRunsExplorer`: a slider over stored runs (e.g. the lambda grid of the
  ablation) that shows each run's metrics and PAG picture grid; nothing is retrained.

Widget callbacks need a live kernel. The built book has none, so its pages show static
figures instead and say so; the toy chapter also has a slider over models trained in advance
(:mod:`pagcore.book.slider`), which needs no kernel. Both explorers keep their latest result in attributes
(``result``, ``figure``, ``shown``) so that tests can drive them from Python.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

from pagcore.book.figures import pag_grid_figure, plot_decision_boundary
from pagcore.book.text import markdown_table, percent
from pagcore.paper.objective import GRADIENTS
from pagcore.paper.targets import MODEL_FREE_SOURCES
from pagcore.toy.experiment import evaluate_toy_model
from pagcore.toy.problem import ToyConfig, toy_split
from pagcore.toy.training import train_toy_model


def show(output: widgets.Output, *objects: Any) -> None:
    """Replace what ``output`` shows (works with or without a live kernel).

    Figures are rendered to PNG here rather than left to the kernel's display hooks, which
    exist only under an inline matplotlib backend.
    """
    output.outputs = ()
    for obj in objects:
        if isinstance(obj, plt.Figure):
            buffer = io.BytesIO()
            obj.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
            obj = Image(data=buffer.getvalue(), format="png")
        output.append_display_data(obj)


class ToyExplorer:
    """Retrain the toy PAG model of one seed whenever lambda, the source or the gradient changes."""

    def __init__(self, config: ToyConfig, seed: int = 0, lam_max: float = 5.0):
        self.config = config.validate()
        self.seed = seed
        self.train_data, self.test_data = toy_split(config, seed)
        self.lam = widgets.FloatSlider(
            value=config.lam,
            min=0.0,
            max=lam_max,
            step=0.05,
            description="λ",
            continuous_update=False,
            readout_format=".2f",
        )
        self.source = widgets.Dropdown(options=MODEL_FREE_SOURCES, value=config.source, description="source")
        self.gradient = widgets.Dropdown(options=GRADIENTS, value=config.gradient, description="gradient of")
        self.status = widgets.Label()
        self.output = widgets.Output()
        self.result: dict[str, float] | None = None
        self.figure = None
        for control in (self.lam, self.source, self.gradient):
            control.observe(self.update, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.lam, self.source, self.gradient]), self.status, self.output])
        self.update()

    def update(self, change: Any = None) -> None:
        config = replace(self.config, lam=self.lam.value, source=self.source.value, gradient=self.gradient.value)
        self.status.value = (
            f"training with λ = {config.lam:.2f}, {config.source}, gradient of the {config.gradient} ..."
        )
        x, y = self.train_data
        model = train_toy_model(x, y, config, self.seed, lam=config.lam, progress=False)
        x_test, y_test = self.test_data
        attack = config.attack()
        x_adv = attack(model, x_test, y_test)
        self.result = evaluate_toy_model(model, x_test, y_test, attack, x_adv=x_adv)
        if self.figure is not None:
            plt.close(self.figure)
        self.figure, ax = plt.subplots(figsize=(5.5, 4.5))
        plot_decision_boundary(
            ax,
            model,
            x_test,
            y_test,
            x_adv=x_adv,
            title=f"λ = {config.lam:.2f} ({'vanilla' if config.lam == 0 else config.source})",
        )
        self.status.value = (
            f"clean {percent(self.result['clean'])}, under PGD {percent(self.result['pgd'])} (seed {self.seed})"
        )
        show(self.output, self.figure)
        plt.close(self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)


class StoredRunsExplorer:
    """A slider over stored runs: each position shows one run's metrics and PAG pictures."""

    def __init__(self, runs: dict[str, Any], labels: dict[str, str] | None = None, class_names: tuple[str, ...] = ()):
        self.runs = {key: run for key, run in runs.items() if run is not None}
        self.labels = labels or {}
        self.class_names = class_names
        self.output = widgets.Output()
        self.shown: str | None = None
        options = list(self.runs) or ["(no stored run)"]
        self.slider = widgets.SelectionSlider(options=options, description="run", continuous_update=False)
        self.slider.observe(self.update, names="value")
        self.widget = widgets.VBox([self.slider, self.output])
        self.update()

    def update(self, change: Any = None) -> None:
        key = self.slider.value
        run = self.runs.get(key)
        if run is None:
            show(self.output, Markdown("No stored run exists yet; train one and rerun this cell."))
            self.shown = None
            return
        metrics = run.metrics
        table = Markdown(
            markdown_table(
                ("run", "clean", "ℓ∞", "ℓ2", "epochs"),
                [
                    (
                        f"`{run.name}`",
                        percent(metrics["clean"]),
                        percent(metrics["linf"]),
                        percent(metrics["l2"]),
                        run.params["epochs"],
                    )
                ],
            )
        )
        figure = pag_grid_figure({key: run}, self.labels, self.class_names)
        show(self.output, table, *([figure] if figure is not None else []))
        if figure is not None:
            plt.close(figure)
        self.shown = key

    def _ipython_display_(self) -> None:
        display(self.widget)
